"""Task kinds, by the name `--config.task_kind` and `fmt.from_pretrained(task=...)`
take. Each is a `fmt.tasks.base.TaskKind`; a new kind is a new file and a line here."""

from fmt.tasks.causal_lm import CausalLM
from fmt.tasks.classification import Classification
from fmt.tasks.masked_lm import MaskedLM
from fmt.tasks.question_answering import QuestionAnswering
from fmt.tasks.seq2seq import Seq2SeqLM
from fmt.tasks.token_classification import TokenClassification

KINDS = {kind.name: kind for kind in (Classification, TokenClassification, QuestionAnswering,
                                       MaskedLM, CausalLM, Seq2SeqLM)}


def create(config):
    """The task kind that `config.task_kind` names, set up from the config."""
    from fmt.errors import UserError
    if config.task_kind not in KINDS:
        raise UserError(f"--config.task_kind={config.task_kind!r}: choose one of "
                        f"{', '.join(KINDS)}")
    return KINDS[config.task_kind](config)
