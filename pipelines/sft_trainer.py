"""TRL's SFTTrainer with the studio's padding-free loss (pipelines/packing.py).

Everything else (dataset preparation, truncation, completion masks, the training loop,
checkpoints) is TRL's; only the loss of a padding-free batch is computed here, from the answer
tokens' logits alone. Prompt-learning methods keep TRL's padded path (`packed=False`).
"""

from __future__ import annotations

from trl import SFTTrainer

from pipelines import packing


class StudioSFTTrainer(SFTTrainer):
    def __init__(self, *args, packed: bool = False, **kwargs):
        self.packed = packed
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.packed:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if model.training else "eval"
        loss, correct, learned = packing.answer_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients over ranks
        self._metrics[mode]["mean_token_accuracy"].append(correct / max(learned, 1))
        if mode == "train":
            self._total_train_tokens += inputs["input_ids"].numel()  # one row, no padding: real tokens
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if not return_outputs:
            return loss
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return loss, CausalLMOutputWithPast(loss=loss)

    def log(self, logs, start_time=None):
        # the accuracy stays a tensor until it is logged: no host sync per step on a GPU
        for values in self._metrics["train" if self.model.training else "eval"].values():
            values[:] = [float(v) for v in values]
        super().log(logs, start_time)
