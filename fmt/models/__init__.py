"""Model families. Each family module provides a config class with `from_hf`,
`build_classifier(config, num_labels, dtype, param_dtype)`, `hf_name_map(config)`
and `HF_ARCHITECTURE`; a new family is a new file plus one line here."""

from fmt.models import bert

# Hugging Face `model_type` -> (family module, config class).
FAMILIES = {
    "bert": (bert, bert.BertConfig),
    "roberta": (bert, bert.BertConfig),
}
