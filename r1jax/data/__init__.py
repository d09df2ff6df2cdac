"""Data: tokenizers, R1 templates, built-in reasoning tasks, loaders and grain pipelines.

The public API is re-exported here; see each module's docstring for layouts and shapes.
"""

from r1jax.config.schema import PROMPT_BUCKETS
from r1jax.data.batching import PromptBatchIterDataset, assemble_prompt_batch, bucket_length
from r1jax.data.errors import DataError
from r1jax.data.formats import FORMATS, detect_format, extract_boxed, normalize_record
from r1jax.data.packing import PackedBatchIterDataset
from r1jax.data.pipeline import (
    RLExample,
    SFTExample,
    as_record_dataset,
    global_order,
    make_rl_dataset,
    make_sft_dataset,
)
from r1jax.data.preferences import make_preference_dataset
from r1jax.data.sources import RecordSource
from r1jax.data.tasks import (
    ArithmeticTask,
    CountdownTask,
    Task,
    TaskDataset,
    get_task,
    iter_examples,
    register_task,
    task_names,
)
from r1jax.data.templates import (
    FALLBACK_CHAT_TEMPLATE,
    R1_ZERO_TEMPLATE,
    ChatTemplate,
    PromptFormatter,
    build_sft_example,
    encode_prompt,
    format_completion,
    format_r1_zero,
    sft_tokens,
)
from r1jax.data.tokenizer import (
    R1_TAGS,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
)
from r1jax.data.tokenizer_train import MIN_VOCAB_SIZE, tokenizer_corpus, train_sentencepiece

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "FORMATS",
    "MIN_VOCAB_SIZE",
    "R1_TAGS",
    "R1_ZERO_TEMPLATE",
    "ArithmeticTask",
    "ChatTemplate",
    "CountdownTask",
    "DataError",
    "HFTokenizer",
    "PROMPT_BUCKETS",
    "PackedBatchIterDataset",
    "PromptBatchIterDataset",
    "PromptFormatter",
    "RLExample",
    "RecordSource",
    "SFTExample",
    "SentencePieceTokenizer",
    "Task",
    "TaskDataset",
    "Tokenizer",
    "as_record_dataset",
    "assemble_prompt_batch",
    "bucket_length",
    "build_sft_example",
    "detect_format",
    "encode_prompt",
    "extract_boxed",
    "format_completion",
    "format_r1_zero",
    "get_task",
    "iter_examples",
    "load_tokenizer",
    "make_rl_dataset",
    "make_preference_dataset",
    "make_sft_dataset",
    "normalize_record",
    "register_task",
    "sft_tokens",
    "global_order",
    "task_names",
    "tokenizer_corpus",
    "train_sentencepiece",
]
