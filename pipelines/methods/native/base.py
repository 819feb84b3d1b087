"""What the studio's own PEFT tuners share: wrapping the targeted modules in the tuner's layers, and
unwrapping them again (none of them can be merged into the weights)."""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, _get_submodules


class NativeTuner(BaseTuner):
    tuner_layer_cls = BaseTunerLayer
    target_module_mapping: dict = {}
    layer_types: tuple = ()  # the tuner's own layer classes
    what = "this adapter"  # for the refusal to merge: "a bottleneck adapter", ...

    def _new_layer(self, peft_config, adapter_name: str, target, target_name: str):
        raise NotImplementedError

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key=None, **kw):
        if isinstance(target, self.layer_types):  # a second adapter on a module already wrapped
            target.update_layer(adapter_name, peft_config)
            return
        new_module = self._new_layer(peft_config, adapter_name, target, target_name)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise ValueError(f"{self.what} cannot be merged into the weights")
        for key in [k for k, _ in self.model.named_modules() if self.prefix not in k]:
            try:
                parent, target, target_name = _get_submodules(self.model, key)
            except AttributeError:
                continue
            if isinstance(target, self.layer_types):
                setattr(parent, target_name, target.get_base_layer())
        return self.model
