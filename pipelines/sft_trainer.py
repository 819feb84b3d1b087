"""TRL's SFTTrainer with the studio's padding-free loss (pipelines/packing.py).

Everything else (dataset preparation, truncation, completion masks, the training loop,
checkpoints) is TRL's; only the loss of a padding-free batch is computed here, from the answer
tokens' logits alone. Prompt-learning methods keep TRL's padded path (`packed=False`).
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from pipelines import packing


class StudioSFTTrainer(SFTTrainer):
    def __init__(self, *args, packed: bool = False, **kwargs):
        self.packed = packed
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.packed:
            found = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.model.training:
                return found
            loss, outputs = found if return_outputs else (found, None)
            loss = self.regularised(loss, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss
        mode = "train" if model.training else "eval"
        # the output layer in the run's half precision on a GPU, as TRL's (the Trainer calls this outside
        # autocast: it ran in float32); float32 on a CPU, where bf16 was no faster (bench/sft_speed.py, studio:
        # 72.0 s vs 71.0 s) and its held-out loss a little higher (bench/faq_quality.py: 0.240 vs 0.221)
        half = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
        dtype = half if inputs["input_ids"].device.type == "cuda" else torch.float32
        # a mixture of experts: its load-balancing loss, as TRL adds it on its padded path (dropped here, the
        # router of a full fine-tune trained without balancing)
        router = bool(getattr(self, "aux_loss_enabled", False))
        loss, correct, learned, aux = packing.answer_loss(model, inputs, num_items_in_batch, dtype, router=router)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients over ranks
        if aux is not None and mode == "train":  # (the held-out loss stays the answers' own)
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + (self.router_aux_loss_coef * aux).to(loss.dtype) / steps
            self._metrics[mode]["aux_loss"].append(aux.detach().float().item())
        self._metrics[mode]["mean_token_accuracy"].append(correct / max(learned, 1))
        if mode == "eval":  # the held-out tokens' summed loss, for a loss per token (evaluation_loop)
            self._eval_nll = self._eval_nll + loss.detach().float() * learned
            self._eval_tokens += learned
        if mode == "train":
            self._total_train_tokens += inputs["input_ids"].numel()  # one row, no padding: real tokens
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if not return_outputs:
            return loss
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return loss, CausalLMOutputWithPast(loss=loss)

    def regularised(self, loss, num_items_in_batch):
        """The loss with AdaLoRA's orthogonality regulariser in its gradient (lora_relatives.orthogonality),
        but not in its value: the curve stays the answer tokens' loss, comparable with other methods' (the
        regulariser, about 1.7 at the start on the built-in model, would read as learning as it fell); the
        regulariser's own value is logged as 'orthogonality'. Per micro-batch: over the accumulation steps,
        as TRL does with a mixture-of-experts' aux loss."""
        from pipelines.methods.lora_relatives import orthogonality

        penalty = orthogonality(self.model)
        if penalty is None:
            return loss
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        self._metrics["train"]["orthogonality"].append(penalty.detach())
        return loss + (penalty - penalty.detach()).to(loss.dtype) / steps

    def _save(self, output_dir=None, state_dict=None):
        """A checkpoint (the Trainer saves checkpoints through this; the run's result is saved by
        train_sft.save): an AdaLoRA adapter at its full rank, its rank pattern beside it."""
        from pipelines.methods.lora_relatives import unresized

        with unresized(self.model, output_dir or self.args.output_dir):
            super()._save(output_dir, state_dict)

    _eval_nll, _eval_tokens = 0.0, 0

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """Held-out loss per held-out token. Transformers averages each batch's loss with one weight per
        batch (a padding-free batch is one row), so the figure moved with the batch size: one base model
        on one held-out set read 2.815 at batch 8 and 2.835 at batch 4, and runs of two batch sizes could
        not be compared."""
        self._eval_nll, self._eval_tokens = 0.0, 0
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        key = f"{metric_key_prefix}_loss"
        if self.packed and self._eval_tokens and key in output.metrics and self.accelerator.num_processes == 1:
            output.metrics[key] = float(self._eval_nll) / self._eval_tokens
        return output

    def log(self, logs, start_time=None):
        # the accuracy stays a tensor until it is logged: no host sync per step on a GPU
        for values in self._metrics["train" if self.model.training else "eval"].values():
            values[:] = [float(v) for v in values]
        super().log(logs, start_time)
