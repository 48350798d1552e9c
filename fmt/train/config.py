"""The default run config; experiment configs under experiments/configs/ start here."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Model: a folder with config.json + model.safetensors, a hub id, or a packaged model.
    c.model = "sentence-transformers/all-MiniLM-L6-v2"
    c.dtype = "float32"            # compute dtype: float32 or bfloat16
    c.dropout = -1.0               # hidden and attention dropout; < 0 keeps the checkpoint's
    c.remat = False                # recompute layer activations in the backward pass: less
                                   # memory for about a third more compute
    # Task kind: classification, token_classification, masked_lm or causal_lm (fmt.tasks.KINDS).
    c.task_kind = "classification"
    # Data: a GLUE task (TFDS, or glue_data files when data_dir is set) or local files.
    c.task = "sst2"                # GLUE task name; ignored when train_file is set
    c.data_dir = ""                # glue_data folder (root or task folder); "" = TFDS
    c.tfds_data_dir = ""           # where TFDS keeps prepared datasets; "" = TFDS default
    c.train_file = ""              # own data: .csv/.tsv/.jsonl with a header or keys
                                   # (classification), CoNLL or .jsonl (token
                                   # classification), .txt or .jsonl (masked-LM)
    c.eval_file = ""               # own data for evaluation (same format as train_file)
    c.text_fields = ("sentence",)  # own data: one text column, or two for a pair
    c.label_field = "label"        # own data: the label column
    c.regression = False           # own data: float labels and one output
    c.metrics = ("accuracy", "f1_macro")  # own data: metric names (fmt.metrics.METRICS)
    c.test_file = ""               # own data: a further split to evaluate and predict on
    c.eval_fraction = 0.05         # own data: held-out share of the train rows when
                                   # eval_file is ""
    c.cv_folds = 0                 # own data: k-fold cross-validation, evaluating on fold
                                   # cv_fold of the train file (experiments/sweep.py --folds)
    c.cv_fold = 0                  # which fold is held out, 0 .. cv_folds - 1
    c.max_seq_length = 128         # longer inputs are truncated (pairs longest-first)
    # Token classification (NER, POS): CoNLL files, or jsonl with token and tag lists.
    c.tokens_field = "tokens"      # jsonl: the list of words
    c.tags_field = "tags"          # jsonl: the list of tags, one per word
    c.label_all_tokens = False     # label every sub-token of a word, not only the first
    # Extractive QA: SQuAD-format .json or .jsonl (question, context, answers), or TFDS squad.
    c.doc_stride = 128             # tokens shared by neighbouring windows of a long context
    c.max_answer_length = 30       # longest answer span predicted, in tokens
    c.n_best_size = 20             # start and end candidates tried per window
    c.version_2_with_negative = False  # SQuAD v2: questions may have no answer
    c.null_score_diff_threshold = 0.0  # v2: predict no answer when its score beats the best
                                       # span's by more than this
    # Masked-LM and causal-LM: .txt (a text per line) or .jsonl files, or a TFDS text dataset.
    c.text_field = "text"          # jsonl / TFDS: the field holding the text
    c.tfds_dataset = ""            # TFDS text dataset (e.g. tiny_shakespeare) instead of files
    c.text_mode = "block"          # block: concatenate and cut into max_seq_length; line: a
                                   # text per example
    # Causal-LM prompt/response pairs (.jsonl): the loss falls on the response only.
    c.prompt_field = "prompt"      # jsonl: the field holding the prompt
    c.response_field = ""          # jsonl: the field holding the response; "" = plain text
    c.mlm_probability = 0.15       # share of tokens to predict (80% [MASK], 10% random, 10% kept)
    c.whole_word_masking = False   # mask all sub-tokens of a chosen word together
    # Seq2seq (summarisation, translation): .jsonl with source and target fields, parallel
    # text files (train_file=DIR/train reads DIR/train.<source_lang> and .<target_lang>), or
    # a TFDS builder (cnn_dailymail, xsum, wmt14_translate/de-en, ...).
    c.source_field = "source"      # jsonl: the field holding the input text
    c.target_field = "target"      # jsonl: the field holding the output text
    c.references_field = ""        # jsonl: a list of references to score against (the first
                                   # is the target); "" = the target alone
    c.source_lang = "en"           # parallel files / TFDS translation: the source language
    c.target_lang = "de"           # ... and the target language
    c.source_prefix = ""           # put before every source (T5: "summarize: ",
                                   # "translate English to German: ")
    c.max_target_length = 128      # longer targets are truncated; also the most tokens generated
    c.label_smoothing = 0.0        # share of each target's probability spread over the vocabulary
    c.generation_metrics = ("bleu",)  # scored on generated dev text: bleu (BLEU, chrF) and/or
                                      # rouge (ROUGE-1/2/L/Lsum); () = no generation, perplexity only
    c.num_beams = 1                # generation: 1 = greedy, else beam search
    c.length_penalty = 1.0         # beam search: scores divided by length ** length_penalty
    c.early_stopping = False       # beam search: stop a row once num_beams hypotheses ended
    c.no_repeat_ngram_size = 0     # generation: never repeat an n-gram of this size; 0 = off
    c.min_length = 0               # generation: no end token before this many decoder tokens
    # From scratch: a new model of this size around the tokenizer in --config.model's folder
    # (experiments/train_tokenizer.py); WordPiece gives a BERT, byte-level BPE a RoBERTa.
    c.from_scratch = False         # build a new model instead of loading weights
    c.scratch_family = ""          # from scratch: gpt2 or llama (a decoder), bart or t5 (an
                                   # encoder-decoder, layers each side); "" = BERT or
                                   # RoBERTa, as the tokenizer is WordPiece or BPE
    c.scratch_layers = 4           # from scratch: number of layers
    c.scratch_hidden = 256         # from scratch: hidden size
    c.scratch_heads = 4            # from scratch: attention heads
    c.scratch_intermediate = 1024  # from scratch: MLP size
    c.scratch_positions = 512      # from scratch: longest input in tokens
    c.bucket_lengths = ()          # padded lengths; () = powers of two up to max_seq_length
    c.num_buckets = 0              # > 0: fit that many lengths to the training data, padding
                                   # least (used when bucket_lengths is ())
    c.packing = False              # several examples per row instead of length buckets
                                   # (batch_size examples per update still; at most 3
                                   # compiled shapes; evaluation packs too for pooled kinds)
    c.max_train_examples = 0       # use the first N training examples; 0 = all
    c.max_eval_examples = 0        # use the first N eval examples; 0 = all
    # LoRA: train low-rank adapters (and a new head) instead of every weight.
    c.lora_rank = 0                # adapter rank; 0 = full fine-tuning
    c.lora_alpha = 16.0            # the adapters' scale is lora_alpha / lora_rank
    c.lora_dropout = 0.0           # must stay 0: fmt merges adapters into the weights
    c.lora_targets = ()            # HF module names (or their last part) to adapt; () =
                                   # PEFT's defaults (query,value; c_attn; q_proj,v_proj)
    # Optimisation.
    c.optimizer = "adamw"          # adamw, adam, rmsprop, sgd or adafactor
    c.learning_rate = 5e-5         # peak learning rate
    c.lr_decay = "linear"          # after warmup: linear (to 0), cosine or constant
    c.warmup_ratio = 0.1           # warmup as a share of all steps (if warmup_steps == 0)
    c.warmup_steps = 0             # warmup steps; overrides warmup_ratio when > 0
    c.weight_decay = 0.01          # not on biases and LayerNorm
    c.l1 = 0.0                     # L1 penalty added to the loss
    c.l2 = 0.0                     # L2 penalty (0.5 * l2 * |w|^2) added to the loss
    c.adam_b1 = 0.9                # Adam beta1
    c.adam_b2 = 0.999              # Adam beta2
    c.adam_eps = 1e-8              # Adam epsilon
    c.momentum = 0.9               # SGD and RMSprop momentum; 0 = none
    c.max_grad_norm = 1.0          # global-norm gradient clipping; 0 = off
    c.batch_size = 32              # global batch size (over all devices and hosts)
    c.grad_accum_steps = 1         # split each batch into N microbatches, one update
    c.mesh = "data=-1,fsdp=1,tensor=1"  # device mesh; -1 takes the devices left over
    c.eval_batch_size = 64         # global batch size for evaluation
    c.num_epochs = 3.0             # epochs of training (if max_steps == 0); 0 = evaluate only
    c.max_steps = 0                # total train steps; 0 = from num_epochs
    c.seed = 0                     # seeds the head init, dropout and data order
    c.rng_impl = "threefry2x32"    # dropout's PRNG: threefry2x32 (JAX's default; works on
                                   # every mesh), philox4x32 (half its cost on CPU; fails to
                                   # compile on tensor-parallel meshes in jax 0.10), rbg
                                   # (fastest on TPU) or unsafe_rbg; fmt/train/step.py
    c.skip_nonfinite_steps = False  # skip (and count) updates with a NaN/Inf loss or gradient
                                    # instead of stopping the run
    c.early_stopping_metric = ""   # dev metric to keep the best model by (and stop on); ""= off
    c.early_stopping_patience = 0  # stop after N evals without improvement; 0 = never stop
    # Records.
    c.log_every_steps = 50         # write train metrics every N steps
    c.eval_every_steps = 0         # evaluate every N steps; 0 = only at the end
    c.checkpoint_every_steps = 500  # save an orbax checkpoint every N steps
    c.keep_checkpoints = 2         # how many recent checkpoints to keep
    c.export_model = True          # write the fine-tuned model as a HF folder at the end
    c.progress_bar = True          # tqdm progress bar on stderr
    c.compilation_cache = "auto"   # folder keeping compiled steps for later runs; auto =
                                   # $JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/fmt/jax
                                   # or ~/.cache/fmt/jax; none = off
    return c


def seq2seq_scratch(config, positions: int, epochs: float):
    """The `:scratch` presets of translate.py and summarize.py: a BART of ~10M
    parameters (hidden 256, 3 + 3 layers) around the tokenizer in --config.model,
    with dropout and label smoothing, at a learning rate for training from zero."""
    config.update(from_scratch=True, scratch_family="bart", scratch_layers=3, scratch_hidden=256,
                  scratch_heads=4, scratch_intermediate=1024, scratch_positions=positions,
                  dropout=0.1, label_smoothing=0.1, learning_rate=5e-4, warmup_ratio=0.05,
                  num_epochs=epochs)
    return config
