"""Source/target pairs for sequence-to-sequence tasks (summarisation, translation).

Every reader gives records `{"source": str, "target": str}`; where the data holds
several references per example (a JSON lines file with `references_field`), a
record also has `"references": list[str]`, whose first item is the target.

Sources: parallel text files (one example per line, line i of `DIR/train.en`
translating line i of `DIR/train.de`), JSON lines files (the fields named by the
config), and TFDS summarisation and translation builders. `read_files` is the one
entry point for a `--config.train_file` / `eval_file` value.
"""

import logging
import os

from fmt.data.rows import file_extension, json_kind, jsonl_rows, read_text
from fmt.errors import UserError

log = logging.getLogger("fmt")

JSONL_FORMATS = (".jsonl", ".json")
NO_EXAMPLES = "file is empty; it needs at least one example"
CHUNK = 4096  # examples decoded at a time from TFDS
# TFDS summarisation builders: (source feature, target feature), from each
# builder's features (its supervised_keys).
SUMMARIZATION = {
    "cnn_dailymail": ("article", "highlights"),
    "xsum": ("document", "summary"),
    "gigaword": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
    "billsum": ("text", "summary"),
    "multi_news": ("document", "summary"),
    "newsroom": ("text", "summary"),
    "scientific_papers": ("article", "abstract"),
    "big_patent": ("description", "abstract"),
    "wikihow": ("text", "headline"),
    "aeslc": ("email_body", "subject_line"),
}
TRANSLATION = ("wmt14_translate/<pair>, wmt16_translate/<pair>, wmt19_translate/<pair>, "
               "wmt_t2t_translate, ted_hrlr_translate/<pair>, para_crawl, opus, flores and any "
               "other builder of tfds.features.Translation")
TFDS_FIX = ("pass --config.train_file=<a .jsonl file, or DIR/train for DIR/train.<source_lang> "
            "and DIR/train.<target_lang>>")


def read_parallel(source_path: str, target_path: str) -> list[dict]:
    """Examples of two parallel text files: line i of `source_path` is the source
    of example i, line i of `target_path` its target. Both files need the same
    number of lines and no empty line (a final newline ends the last line; it
    does not start another)."""
    sources = text_lines(source_path)
    targets = text_lines(target_path)
    if len(sources) != len(targets):
        raise UserError(f"{source_path} has {len(sources)} lines but {target_path} has "
                        f"{len(targets)}; parallel files need one example per line in both "
                        f"(line i of one translating line i of the other): check that they are "
                        f"the same split and that neither has extra lines")
    for path, other, lines in ((source_path, target_path, sources),
                               (target_path, source_path, targets)):
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise UserError(f"{path}:{number}: empty line; every line is one example, "
                                f"paired with line {number} of {other}: write its text, or "
                                f"delete line {number} from both files")
    return [{"source": source, "target": target} for source, target in zip(sources, targets)]


def read_jsonl(path: str, source_field: str, target_field: str,
               references_field: str | None = None) -> list[dict]:
    """Examples of a JSON lines file (.jsonl, or .json holding one object per
    line): the `source_field` and `target_field` strings of each object, and with
    `references_field` (None or "" for none) its list of reference strings. The
    record's references start with the target: the list as written when its
    first item is the target, else the target moved (or added) to the front."""
    file_extension(path, JSONL_FORMATS, "source/target examples")
    records = []
    for number, row in jsonl_rows(path, read_text(path, empty=NO_EXAMPLES)):
        where = f"{path}:{number}"
        source = _string(row, source_field, where, "source_field")
        target = _string(row, target_field, where, "target_field")
        for side, field, text in (("source", source_field, source),
                                  ("target", target_field, target)):
            if not text.strip():
                raise UserError(f"{where}: field {field!r} is empty; every example needs a "
                                f"{side} text: write it, or delete the line "
                                f"(--config.{side}_field names the field)")
        record = {"source": source, "target": target}
        if references_field:  # the config's "" means none
            record["references"] = _references(row, references_field, target, where)
        records.append(record)
    if not records:
        raise UserError(f"{path}: {NO_EXAMPLES}")
    return records


def read_tfds(name: str, split: str, *, source_lang: str = "en", target_lang: str = "de",
              data_dir: str | None = None) -> list[dict]:
    """Examples of a TFDS split, as strings in TFDS's order: a summarisation
    builder of `SUMMARIZATION` (cnn_dailymail: article -> highlights, xsum:
    document -> summary, ...), or a translation builder (features
    `tfds.features.Translation`, a string per language: wmt14_translate/de-en,
    ...) read from `source_lang` to `target_lang`. Examples with an empty source
    or target are left out (logged), as the data cannot be edited."""
    from fmt.data import tfds_ready
    base = name.split("/")[0].split(":")[0]  # cnn_dailymail/3.4.0, xsum:1.1.0
    if base in SUMMARIZATION:
        fields = SUMMARIZATION[base]
    else:
        _, tfds = tfds_ready.import_tfds(name, TFDS_FIX)
        fields = _translation_fields(tfds, name, data_dir, source_lang, target_lang)
    tf, tfds, dataset = tfds_ready.load(
        name, split, data_dir, TFDS_FIX,
        "e.g. cnn_dailymail, xsum or wmt14_translate/de-en, splits train, validation and test")
    spec = dataset.element_spec
    for field in fields:
        held = spec.get(field) if isinstance(spec, dict) else None
        if not isinstance(held, tf.TensorSpec) or held.dtype != tf.string or held.shape.rank:
            found = ", ".join(spec) if isinstance(spec, dict) else "none"
            raise UserError(f"TFDS {name} has no string feature {field!r} (features: {found}); "
                            f"check the builder's version, or {TFDS_FIX}")
    source_field, target_field = fields
    pairs = dataset.map(lambda example: (example[source_field], example[target_field]))
    records, skipped = [], 0
    # Batched: one Python step per example is slow on cnn_dailymail's 287k articles.
    for sources, targets in tfds.as_numpy(pairs.batch(CHUNK)):
        for source, target in zip(sources, targets):
            source, target = source.decode("utf-8"), target.decode("utf-8")
            if source.strip() and target.strip():
                records.append({"source": source, "target": target})
            else:
                skipped += 1
    if skipped:
        log.warning("TFDS %s split %r: left out %d example(s) with an empty %r or %r",
                    name, split, skipped, source_field, target_field)
    if not records:
        raise UserError(f"TFDS {name} split {split!r}: no example with both {source_field!r} "
                        f"and {target_field!r}; check the split")
    return records


def read_files(path: str, source_field: str = "source", target_field: str = "target",
               references_field: str | None = None, source_lang: str = "en",
               target_lang: str = "de") -> list[dict]:
    """Examples of a `--config.train_file` / `eval_file` value:

    - a `.jsonl` (or `.json`, one object per line) file: `read_jsonl` with the
      fields named;
    - otherwise the common prefix of two parallel text files, the languages
      being their suffixes: `DIR/train` reads `DIR/train.<source_lang>` (sources)
      and `DIR/train.<target_lang>` (targets), e.g. `data/train` with en and de
      reads `data/train.en` and `data/train.de`. Naming either file of the pair
      (`data/train.en` or `data/train.de`) reads the same pair.
    """
    if os.path.splitext(path)[1].lower() in JSONL_FORMATS:
        return read_jsonl(path, source_field, target_field, references_field)
    if source_lang == target_lang:
        raise UserError(f"--config.source_lang and --config.target_lang are both "
                        f"{source_lang!r}; name two languages, the suffixes of the files")
    prefixes = [path] + [path.removesuffix(f".{lang}") for lang in (source_lang, target_lang)
                         if path.endswith(f".{lang}")]
    tried = []
    for prefix in prefixes:
        pair = (f"{prefix}.{source_lang}", f"{prefix}.{target_lang}")
        if all(os.path.isfile(p) for p in pair):
            return read_parallel(*pair)
        tried += pair
    found = [p for p in tried if os.path.isfile(p)]
    if found:
        raise UserError(f"{path}: found {', '.join(found)} but not the other file of its pair "
                        f"(tried {', '.join(tried)}); give both files, or set "
                        f"--config.source_lang and --config.target_lang to the files' suffixes")
    if os.path.isfile(path):
        kind = os.path.splitext(path)[1] or "(no extension)"
        raise UserError(f"{path}: unsupported file type {kind} for source/target examples "
                        f"(no {', '.join(tried)}); name a .jsonl file, or the common prefix "
                        f"of two parallel files that end .{source_lang} and .{target_lang} "
                        f"(--config.source_lang, --config.target_lang)")
    raise UserError(f"{path}: no such files (tried {', '.join(tried)}); name a .jsonl file, or "
                    f"the common prefix of two parallel files that end "
                    f".{source_lang} and .{target_lang} (--config.source_lang, "
                    f"--config.target_lang)")


def text_lines(path: str) -> list[str]:
    """The lines of a text file, blank ones kept (they are examples too), CRLF
    tolerated; a final newline ends the last line."""
    lines = [line.removesuffix("\r")
             for line in read_text(path, empty=NO_EXAMPLES).split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def _field(row: dict, field: str, where: str, flag: str):
    if field not in row:
        raise UserError(f"{where}: no field {field!r} (fields: {', '.join(row) or 'none'}); "
                        f"give every object a {field!r}, or name the field with "
                        f"--config.{flag}")
    return row[field]


def _string(row: dict, field: str, where: str, flag: str) -> str:
    value = _field(row, field, where, flag)
    if not isinstance(value, str):
        raise UserError(f"{where}: field {field!r} must be a string, found "
                        f"{json_kind(value)}; write the text as a string (--config.{flag} "
                        f"names the field)")
    return value


def _references(row: dict, field: str, target: str, where: str) -> list[str]:
    """The reference strings, the target first."""
    fix = f'write "{field}" as a list of strings (--config.references_field names the field)'
    references = _field(row, field, where, "references_field")
    if not isinstance(references, list):
        raise UserError(f"{where}: field {field!r} must be a list, found "
                        f"{json_kind(references)}; {fix}")
    for i, reference in enumerate(references):
        if not isinstance(reference, str):
            raise UserError(f"{where}: {field}[{i}] must be a string, found "
                            f"{json_kind(reference)}; {fix}")
        if not reference.strip():
            raise UserError(f"{where}: {field}[{i}] is empty; write the reference, or "
                            f"leave it out of the list")
    if references[:1] == [target]:
        return list(references)
    if target in references:
        references = list(references)
        references.remove(target)
    return [target, *references]


def _translation_fields(tfds, name: str, data_dir: str | None, source_lang: str,
                        target_lang: str) -> tuple[str, str]:
    """(source, target) feature names of a translation builder: its languages."""
    from fmt.data import tfds_ready
    builder = tfds_ready.builder_or_none(tfds, name, data_dir)
    features = builder.info.features if builder is not None else None
    if not isinstance(features, tfds.features.Translation):
        kind = "unknown to TFDS" if builder is None else "not a supported seq2seq builder"
        raise UserError(f"TFDS {name} is {kind}; the supported ones are the summarisation "
                        f"builders {', '.join(SUMMARIZATION)} and the translation builders "
                        f"{TRANSLATION}; or {TFDS_FIX}")
    languages = list(features.languages)
    if source_lang == target_lang or {source_lang, target_lang} - set(languages):
        raise UserError(f"TFDS {name} holds the languages {', '.join(languages)}, not "
                        f"{source_lang} -> {target_lang}; set --config.source_lang and "
                        f"--config.target_lang to two of them, or pick the builder config of "
                        f"your pair (e.g. wmt14_translate/fr-en)")
    return source_lang, target_lang
