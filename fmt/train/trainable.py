"""What a run trains: every param, or LoRA adapters over frozen params.

With `--config.lora_rank`, the optimizer sees only the adapters (fmt.models.lora)
and, for kinds with labels, the new head (PEFT's modules_to_save); everything
else is `frozen`: kept in the train state with its usual sharding, read by the
step through `materialize`, never given a gradient, an optimizer moment or a
place in the checkpoints (it is the checkpoint folder's, loaded again on
resume).
"""

import logging

import jax
import numpy as np

from fmt.errors import UserError
from fmt.models import lora

log = logging.getLogger("fmt")


class Trainable:
    def __init__(self, config, model, task):
        self.spec = None
        self.head_trained = False
        if config.lora_rank:
            if config.lora_dropout:
                raise UserError(f"--config.lora_dropout={config.lora_dropout}: fmt merges the "
                                "adapters into the weights inside the step, where dropout on "
                                "their input has no place; leave it 0")
            self.spec = lora.plan(model.name_map(), model.params, config.lora_rank,
                                  config.lora_alpha, tuple(config.lora_targets),
                                  model.config.model_type)
            self.head_trained = task.labels is not None
            self.seed = config.seed

    @property
    def lora(self) -> bool:
        return self.spec is not None

    def split(self, params: dict) -> tuple[dict, dict | None]:
        """(what the optimizer updates, what stays frozen or None)."""
        if not self.lora:
            return params, None
        trainable = {"lora": lora.init(self.spec, self.seed)}
        frozen = dict(params)
        if self.head_trained:
            trainable["head"] = frozen.pop("head")
        return trainable, frozen

    def specs(self, logical_specs: dict) -> tuple[dict, dict | None]:
        """The logical axis names of both parts: adapters are small and replicated."""
        if not self.lora:
            return logical_specs, None
        from jax.sharding import PartitionSpec as P
        trainable = {"lora": {str(i): {"lora_A": P(), "lora_B": P()}
                              for i in range(len(self.spec.targets))}}
        frozen = dict(logical_specs)
        if self.head_trained:
            trainable["head"] = frozen.pop("head")
        return trainable, frozen

    def materialize(self, trainable: dict, frozen: dict | None) -> dict:
        """The model's params (pure: runs inside the jitted steps)."""
        if not self.lora:
            return trainable
        params = dict(frozen)
        if self.head_trained:
            params["head"] = trainable["head"]
        return lora.merge(params, trainable["lora"], self.spec)

    def report(self, model_params: dict, trainable: dict, opt_state, optimizer) -> None:
        """Log the trainable share and the optimizer state's bytes, with full
        fine-tuning's beside them."""
        count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
        size = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize
                                for x in jax.tree.leaves(tree))
        total = count(model_params)
        full_opt = size(jax.eval_shape(optimizer.init, model_params))
        what = (f"LoRA rank {self.spec.rank} on {len(self.spec.targets)} modules"
                + (" and the head" if self.head_trained else "")) if self.lora else "every param"
        log.info("training %s: %d of %d params (%.2f%%); optimizer state %.1f MB (full "
                 "fine-tuning: %.1f MB)", what, count(trainable), total,
                 100 * count(trainable) / total, size(opt_state) / 2 ** 20, full_opt / 2 ** 20)

    def export_adapter(self, folder, trainable: dict, model, task_name: str) -> None:
        """The PEFT adapter folder (adapters, and a trained head as modules_to_save)."""
        head = {}
        if self.head_trained:
            from fmt import hf
            full = {"head": jax.device_get(trainable["head"])}
            head = hf.export_tensors(full, model.head.name_map)
        lora.save_peft(folder, jax.device_get(trainable["lora"]), self.spec,
                       str(model.hf_config.get("_name_or_path") or ""), task_name, head)
