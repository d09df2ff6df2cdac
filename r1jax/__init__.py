"""r1jax: DeepSeek-R1 style reasoning training (GRPO, SFT, distillation) in JAX.

Importing this package does no work: no devices are touched and nothing is compiled.

Shape suffixes: an array's name may end in one capital letter per axis (``logits_BTV`` is
[batch, positions, vocab]); the letters mean the same in every module:

    B  batch rows: a train batch's sequences, a sampler call's rows (B = Q * G)
    Q  prompts (questions), distinct; each is sampled G times
    G  samples per prompt (a GRPO group)
    R  rollout rows on the host: the completions being scored (R = Q * G)
    M  micro-batches
    P  prompt positions, where completion positions (T) come after them: a GRPO batch's
       ``prompt_tokens``, the sampler's prompt bucket
    T  sequence positions: of a train sequence, a completion, the tokens of a forward call
    S  key positions: KV-cache slots
    L  layers
    D  model width (hidden size)
    F  MLP width
    V  vocabulary
    N  query heads
    K  kv heads (attention), or top-k entries (distillation, top-k sampling)
    A  query heads attending with each kv head (N // K)
    H  head dim
    E  stop sequences (entries of the sampler's stop table)
    W  stop-sequence width (the recent tokens compared with them)
    C  decode slots of the continuous sampler (rows of its KV cache)
    1  an axis of size one (``positions_B1``)
"""

__version__ = "0.1.0"
