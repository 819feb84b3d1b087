"""The method catalogue: one explicit `METHODS` dict, one declaration per method."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.methods import adapters, blockwise, experts, full, lora, lowrank_optim, mezo, preference, prompts, qlora, reft, rl, scaling, sparse
from pipelines.methods import lora_dynamic as dyn
from pipelines.methods import lora_relatives as rel
from pipelines.methods.params import ConfigError, describe, did_you_mean, parse, split_by_target
from pipelines.methods.setup import Setup

# PEFT warns of a norm layer it does not know (LlamaRMSNorm) whenever a method's targets reach one; it
# trains it as a plain weight, as tests/test_methods_train.py checks. In the server's log (the Method
# table measures every method) and a run's log it read as a fault.
warnings.filterwarnings("ignore", message=r"Unsupported layer type '<class '[\w.]*(RMSNorm|LayerNorm)'>' encountered",
                        category=UserWarning)


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    family: str
    data_kind: str  # "sft", "preference", "kto", "text", "prompts"
    summary: str
    when_to_use: str
    mergeable: bool  # can the learned change be folded into the base weights
    params: type
    # (params, Setup) -> PEFT config; None = no adapter, `trainable` picks the weights that learn
    peft_config: Callable[[Any, Setup], Any] | None = None
    trainable: Callable[[Any, Any], None] | None = None  # (model, params): set requires_grad
    optimizer: Callable[[Any, Any], Any] | None = None  # (peft model, params) -> torch optimizer
    callbacks: Callable[[Any, Any], list] | None = None  # (peft model, params) -> trainer callbacks
    initialize: Callable[[Any, Any, Setup], None] | None = None  # (peft model, params, setup): a better start
    quantized: bool = False  # base loaded in 4-bit (QLoRA)
    converts_base: bool = False  # PiSSA/OLoRA change the base weights at the start
    runner: str = "pipelines.train_sft"  # module whose train(job, run_dir, events) runs it
    trl: str = "sft"  # which TRL trainer and config: sft, dpo, kto, grpo, reward, orpo, cpo (see trainers.py)
    reference: bool = False  # compares against the starting model (DPO, KTO): one more forward pass
    fixed: dict = field(default_factory=dict)  # trainer settings the method always uses (SimPO's loss)
    validate: Callable[[Any], None] | None = None  # (params): ConfigError for values that cannot work together
    check_model: Callable[[Any], None] | None = None  # (model config): ConfigError for a model it cannot train
    # SFT batches without padding (pipelines/packing.py) unless the method's forward needs more
    # than the language-model loss (AdaLoRA adds its regulariser to the model's own loss)
    packs: bool = True
    rewards: bool = False  # learns from reward functions the run lists (reinforcement learning)
    # (model path, params) -> bytes of optimizer state, where it is not AdamW's 8 per trainable weight
    state_bytes: Callable[[str, Any], int] | None = None
    # () -> the trainer class, where the method's training step is not a gradient step (MeZO)
    sft_trainer: Callable[[], type] | None = None
    zeroth_order: bool = False  # learns from loss measurements alone: no backward pass, no gradients
    # (model path, params, the run's optimizer steps, device) -> seconds of work done every N steps
    # that the FLOPs of the passes do not tell (GaLore's SVDs)
    projection_seconds: Callable[[str, Any, int, str], float] | None = None
    # learned tokens go in front of every row's input, so every layer computes them (prompt tuning,
    # P-tuning; a prefix is only keys and values)
    virtual_inputs: bool = False
    # (model, output folder, params): writes the result where PEFT's save_pretrained is not it (DyLoRA's cut)
    save_result: Callable[[Any, Any, Any], None] | None = None
    whole_result: bool = False  # the base weights move too (Delta-LoRA): the result is a whole model
    # why it trains in one process only, where it does (BAdam changes which weights learn as it goes: DDP and
    # DeepSpeed fix that set when they wrap the model); said in the refusal of several processes
    one_process: str = ""
    # why an early-stopping run of it ends with its last weights, not its best check's (callbacks.restore_best),
    # where the trainer cannot load a checkpoint back into the running model
    keeps_last: str = ""

    @property
    def artifact(self) -> str:
        """What a finished run leaves: an 'adapter' on the base, or a whole 'model'."""
        return "adapter" if self.peft_config and not self.whole_result else "model"

    @property
    def reward_model(self) -> bool:
        """Its result scores replies instead of writing them: not a model to chat with or start from."""
        return self.trl == "reward"

    @property
    def beside_base(self) -> bool:
        """An adapter no weight can hold (prompt learning, bottleneck adapters, ReFT): it only works
        loaded beside its base, and cannot be merged or exported."""
        return self.artifact == "adapter" and not self.mergeable and not self.reward_model

    @property
    def prompt_learning(self) -> bool:
        return self.family == "Prompt learning"

    @property
    def padding_free(self) -> bool:
        """Trains on padding-free batches: SFT methods whose model takes the rows end to end
        (prompt learning prepends virtual tokens to every row instead)."""
        return self.packs and self.data_kind == "sft" and not self.prompt_learning


def _m(key, label, family, summary, when, mergeable, params, **hooks) -> Method:
    return Method(key=key, label=label, family=family, data_kind="sft", summary=summary,
                  when_to_use=when, mergeable=mergeable, params=params, **hooks)


def _pref(key, label, data_kind, trl, summary, when, params, **hooks) -> Method:
    """A preference method: trains a LoRA adapter unless it declares `trainable` (full weights)."""
    if "trainable" not in hooks:
        hooks["peft_config"] = preference.preference_lora_config
    return Method(key=key, label=label, family="Preference", data_kind=data_kind, summary=summary,
                  when_to_use=when, mergeable="trainable" not in hooks, params=params,
                  runner="pipelines.train_pref", trl=trl, **hooks)


METHODS: dict[str, Method] = {m.key: m for m in [
    _m("full", "Full fine-tuning", "Full",
       "Every weight of the model learns. The most capable and the most expensive: memory for "
       "the weights, their gradients and optimizer state (about 16 bytes per weight), and the "
       "result is a whole new copy of the model.",
       "Small models, or when you have lots of data and adapters have plateaued.",
       False, full.FullParams, trainable=full.train_everything),
    _m("freeze", "Freeze tuning", "Full",
       "Only the last few transformer blocks learn; everything below stays frozen. A middle "
       "ground: more capacity than an adapter, far less memory than full tuning.",
       "When an adapter is not enough but full tuning does not fit.",
       False, full.FreezeParams, trainable=full.train_last_blocks),
    _m("lora", "LoRA", "LoRA",
       "Freezes the model and learns a small low-rank 'patch' for its layers. Fast, light on "
       "memory, and the result is a small file you can switch on and off.",
       "The default choice for teaching a model new facts, a style or a format.",
       True, lora.LoraParams, peft_config=lora.lora_config),
    _m("rslora", "rsLoRA", "LoRA",
       "LoRA with a corrected scaling, so a large patch (a high rank) learns as fast as a small "
       "one and the extra size actually buys quality.",
       "When you want a high rank (64+) for a hard task.",
       True, lora.RsLoraParams, peft_config=lora.lora_config),
    _m("dora", "DoRA", "LoRA",
       "Splits each weight into a length and a direction: LoRA learns the direction, a small "
       "vector learns the length. Often closer to full tuning than LoRA at the same rank, "
       "a little slower per step.",
       "When LoRA's quality falls short and a bit more time per step is fine.",
       True, lora.LoraParams, peft_config=lora.dora_config),
    _m("pissa", "PiSSA", "LoRA",
       "LoRA whose patch starts from the parts of each weight that matter most, instead of "
       "from nothing, so it learns faster in the first steps.",
       "Short runs where you want LoRA's result sooner.",
       True, lora.PissaParams, peft_config=lora.lora_config, converts_base=True),
    _m("olora", "OLoRA", "LoRA",
       "Like PiSSA, LoRA whose patch starts from a summary of each weight rather than from "
       "nothing, with a summary that is quicker to compute: steady, fast early learning.",
       "Like PiSSA: faster convergence in short runs.",
       True, lora.LoraParams, peft_config=lora.olora_config, converts_base=True),
    _m("loraplus", "LoRA+", "LoRA",
       "LoRA where one of the two halves of each patch learns 16 times faster than the other; "
       "its paper shows this learns faster and better at the same cost.",
       "A free upgrade over LoRA when training feels slow to improve.",
       True, lora.LoraPlusParams, peft_config=lora.lora_config, optimizer=lora.loraplus_optimizer),
    _m("lorafa", "LoRA-FA", "LoRA",
       "LoRA where one half of each patch stays fixed at its random start and only the other "
       "half learns, which saves the memory LoRA keeps for long inputs.",
       "Long examples or big batches where LoRA's activation memory is the limit.",
       True, lora.LoraParams, peft_config=lora.lora_config, optimizer=lora.lorafa_optimizer),
    _m("dylora", "DyLoRA", "LoRA",
       "LoRA trained so that any smaller rank of the same adapter also works: each step trains it cut to a "
       "random rank. You choose the rank to save; a smaller one is a smaller, faster adapter with no retraining.",
       "When you do not know which rank is enough, or want to trade size for quality after training.",
       True, dyn.DyLoraParams, peft_config=lora.lora_config, callbacks=dyn.dylora_callbacks,
       validate=dyn.check_dylora, save_result=dyn.save_dylora, check_model=dyn.plain_layers_only("DyLoRA")),
    _m("delta_lora", "Delta-LoRA", "LoRA",
       "LoRA where the model's own weights also move after every step, by the change of the adapter: more "
       "than a low-rank change can be learned, with LoRA's memory (no gradients or optimizer state for the "
       "model's weights). The result is a whole model.",
       "When LoRA's quality plateaus and a whole-model result is fine.",
       False, dyn.DeltaLoraParams, peft_config=lora.lora_config, callbacks=dyn.delta_callbacks,
       validate=dyn.check_delta, save_result=dyn.save_merged, whole_result=True,
       check_model=dyn.plain_layers_only("Delta-LoRA"),
       keeps_last="its checkpoints keep the base weights it moved beside the adapter, which the trainer "
       "does not load back"),
    _m("vera", "VeRA", "LoRA",
       "One pair of random matrices shared by every layer, frozen; each layer learns only two "
       "small scaling vectors. Ten times fewer trainable weights than LoRA.",
       "When the adapter file must be tiny (many adapters for many users).",
       True, rel.VeraParams, peft_config=rel.vera_config),
    _m("adalora", "AdaLoRA", "LoRA",
       "LoRA whose rank budget moves during training: layers that matter keep their rank, "
       "the rest give it up. Same final size as LoRA, spent where it helps.",
       "When you do not know which layers need capacity and want a fixed-size adapter.",
       True, rel.AdaLoraParams, peft_config=rel.adalora_config, callbacks=rel.adalora_callbacks,
       validate=rel.check_adalora, packs=False, keeps_last="its layers' ranks change as it trains, so an earlier check's adapter no "
       "longer fits the running model"),
    _m("loha", "LoHa", "LoRA",
       "Builds the change from two small patches multiplied together entry by entry: more "
       "expressive than LoRA for the same number of learned weights.",
       "When LoRA at a small rank underfits and you want more from the same budget.",
       True, rel.LycorisParams, peft_config=rel.loha_config),
    _m("lokr", "LoKr", "LoRA",
       "Builds a full-size change by tiling one tiny learned block with another (a Kronecker "
       "product): very few learned weights for a change that reaches every weight.",
       "Very small adapters with more reach than a low-rank LoRA.",
       True, rel.LokrParams, peft_config=rel.lokr_config),
    _m("qlora", "QLoRA", "LoRA",
       "LoRA on a copy of the model squeezed to 4 bits per weight: the frozen model takes about "
       "a quarter of the memory, so a model four times bigger fits. On a GPU each step is "
       "usually somewhat slower (weights are unpacked as they are used); the Method table shows "
       "the time for this machine.",
       "When the model does not fit in memory for LoRA.",
       True, qlora.QLoraParams, peft_config=lora.lora_config, quantized=True),
    _m("ia3", "IA3", "Scaling",
       "Learns one scale per channel for the attention keys, values and the feed-forward "
       "layer: the fewest trainable weights of any adapter here.",
       "Quick, tiny adapters for light changes of style or format.",
       True, scaling.IA3Params, peft_config=scaling.ia3_config),
    _m("ln_tuning", "LayerNorm tuning", "Scaling",
       "Trains only the normalisation weights of each layer. BitFit trains the biases, but "
       "models like Llama have none, so the normalisation weights play that role here.",
       "A minimal, safe nudge of the model; a baseline for other methods.",
       True, scaling.LNTuningParams, peft_config=scaling.ln_tuning_config),
    _m("prefix", "Prefix tuning", "Prompt learning",
       "Learns keys and values put in front of every layer's attention, as if a learned "
       "context were always there. The model itself is untouched.",
       "Steering style or task format with a very small file; less suited to new facts.",
       False, prompts.PrefixParams, peft_config=prompts.prefix_config, initialize=prompts.prefix_from_text,
       validate=prompts.check_prefix),
    _m("prompt", "Prompt tuning", "Prompt learning",
       "Learns a few 'soft prompt' token embeddings put in front of every input, started "
       "from an instruction you write. The model itself is untouched.",
       "Large models and simple tasks; the smallest possible adapter.",
       False, prompts.PromptTuningParams, peft_config=prompts.prompt_config, virtual_inputs=True,
       validate=prompts.check_prompt),
    _m("ptuning", "P-tuning", "Prompt learning",
       "Like prompt tuning, but the soft prompt is produced by a small network while "
       "training, which trains more stably.",
       "When prompt tuning is unstable or slow to learn.",
       False, prompts.PTuningParams, peft_config=prompts.ptuning_config, virtual_inputs=True,
       keeps_last="a checkpoint holds the prompt its network made, not the network, which loading "
       "it back would run a second time"),
    _m("galore", "GaLore", "Memory-efficient optimizer",
       "Every weight learns, as in full fine-tuning, but the optimizer remembers each big matrix's gradient "
       "only along its most important directions (a low-rank projection, refreshed now and then). Its "
       "memory for the optimizer shrinks several-fold; the result is a whole model.",
       "When full fine-tuning is what you want but its optimizer does not fit; an adapter is cheaper still.",
       False, lowrank_optim.GaLoreParams, trainable=full.train_everything,
       fixed={"optim": "galore_adamw", "optim_target_modules": lowrank_optim.TARGETS},
       state_bytes=lowrank_optim.state_bytes, projection_seconds=lowrank_optim.projection_seconds),
    _m("apollo", "APOLLO", "Memory-efficient optimizer",
       "Every weight learns; the optimizer only measures each big matrix's gradient through a small random "
       "projection and uses that to set a step size per channel: near the memory of plain SGD with "
       "results close to AdamW's. The result is a whole model.",
       "Full-weight training on the least optimizer memory; with rank 1 and 'tensor' scaling (APOLLO-Mini) "
       "the optimizer's memory almost vanishes.",
       False, lowrank_optim.APOLLOParams, trainable=full.train_everything,
       fixed={"optim": "apollo_adamw", "optim_target_modules": lowrank_optim.TARGETS},
       state_bytes=lowrank_optim.state_bytes),
    _m("mezo", "MeZO", "Memory-efficient optimizer",
       "Every weight learns without a backward pass: each step measures the loss twice, with all weights "
       "nudged a little one way and then the other along a random direction, and moves them down that "
       "slope. Memory is what chatting with the model takes; but it learns far more slowly than any "
       "gradient method (many epochs for what LoRA learns in one) and the result is a whole model.",
       "When nothing else fits in memory and time is cheap; or to tune a model too large to train "
       "otherwise. Otherwise prefer LoRA or QLoRA.",
       False, mezo.MeZOParams, trainable=full.train_everything, sft_trainer=mezo.trainer_class,
       # each step updates the weights itself: no accumulation of steps, no gradients to clip
       fixed={"max_grad_norm": 0.0}, validate=mezo.validate,
       state_bytes=lambda _path, _params: 0, zeroth_order=True),
    _m("badam", "BAdam", "Memory-efficient optimizer",
       "Every transformer block learns, but one at a time: each block takes a turn of a few steps while the "
       "others stay frozen, so gradients and the optimizer's memory exist for one block only. Close to full "
       "fine-tuning's quality at a fraction of its memory; the result is a whole model.",
       "Full-weight training when full fine-tuning's optimizer does not fit; with few examples, keep the steps "
       "per block small so every block gets its turn.",
       False, blockwise.BAdamParams, trainable=blockwise.first_block_only, optimizer=blockwise.block_optimizer,
       state_bytes=blockwise.state_bytes,
       one_process="changes which weights learn as it goes, which {name} does not follow (each process would keep "
                   "its own copy of them)"),
    _m("shira", "SHiRA (sparse)", "Sparse",
       "Picks a small fixed set of single weights in each layer (as many as a LoRA of the same rank would "
       "train) and lets only those learn. The change is scattered over the whole matrix rather than squeezed "
       "into a low rank, and it folds back into the model exactly, like LoRA.",
       "An alternative to LoRA at the same size when LoRA's low rank seems to limit what it learns; "
       "switching between several such adapters is cheap.",
       True, sparse.ShiraParams, peft_config=sparse.shira_config),
    _m("esft", "ESFT (mixture-of-experts)", "Sparse",
       "For mixture-of-experts models only, where each token is handled by a few of many 'expert' "
       "sub-networks: measures which experts your data is sent to most and trains only those; attention, the "
       "routers and every other expert stay as they were. The paper matches full tuning with far less "
       "forgetting. The result is a whole model.",
       "Fine-tuning a mixture-of-experts model (Mixtral, Qwen-MoE, OLMoE, DeepSeek-MoE); it cannot train a "
       "dense model such as the built-in one.",
       False, experts.EsftParams, trainable=experts.train_experts, callbacks=experts.esft_callbacks,
       fixed={"weight_decay": 0.0}, check_model=experts.check_model,
       one_process="measures which experts learn on the data it sees, and each process would choose its own"),
    _m("houlsby", "Bottleneck adapter (Houlsby)", "Adapters",
       "Adds two small networks to every block, one after the attention and one after the feed-forward "
       "part: each squeezes the hidden state down to a few dimensions and back and adds what it learned. The "
       "model's own weights stay untouched. The original adapter method (Houlsby et al. 2019).",
       "A classic alternative to LoRA for new tasks and formats; the result loads beside the base (chat, "
       "continued training) but cannot be folded into the weights or exported to GGUF.",
       False, adapters.BottleneckParams, peft_config=adapters.houlsby_config),
    _m("pfeiffer", "Bottleneck adapter (Pfeiffer)", "Adapters",
       "Like the Houlsby adapter but with one small network per block, after the feed-forward part only: "
       "half the added weights and faster, with nearly the same quality in the paper's tests.",
       "When you want an adapter like Houlsby's at half the size and cost.",
       False, adapters.BottleneckParams, peft_config=adapters.pfeiffer_config),
    _m("parallel_adapter", "Parallel adapter", "Adapters",
       "A small network beside each block's feed-forward part rather than after it: it reads the same input "
       "and its output, scaled up, is added to the feed-forward output. He et al. (2022) found this the "
       "strongest place for an adapter.",
       "The best-performing bottleneck adapter in the unified-view paper; a good first adapter to try.",
       False, adapters.ParallelAdapterParams, peft_config=adapters.parallel_config),
    _m("mam", "MAM adapter", "Adapters",
       "Mix-and-match: learned keys and values in front of every attention layer (as in prefix tuning) plus a "
       "parallel adapter beside every feed-forward part. He et al. (2022) found this pair matched full "
       "fine-tuning with a fraction of the weights.",
       "When a single adapter falls short and you want the strongest adapter mix; it loads beside the base "
       "(chat, continued training) but cannot be folded into the weights.",
       False, adapters.MamParams, peft_config=adapters.mam_config, initialize=adapters.mam_from_text,
       validate=adapters.check_mam, packs=False),
    _m("unipelt", "UniPELT", "Adapters",
       "Three small learners at once: LoRA on the attention's queries and values, learned keys and values in "
       "front of every attention layer, and an adapter after every feed-forward part, each behind a learned "
       "gate that decides, word by word, how much that part speaks. Training finds the mix that suits the "
       "task instead of you choosing (Mao et al. 2022).",
       "When you do not know which small method suits your task, or one alone falls short; it loads beside "
       "the base (chat, continued training) but cannot be folded into the weights.",
       False, adapters.UniPeltParams, peft_config=adapters.unipelt_config, initialize=adapters.mam_from_text,
       validate=adapters.check_mam, packs=False),
    _m("loreft", "LoReFT", "Representation editing",
       "Leaves every weight alone and learns to edit the hidden state that chosen blocks pass on, inside a "
       "few (4) directions that are kept at right angles to each other. Tens of times fewer trainable "
       "weights than LoRA.",
       "Tiny adapters for instruction following and style, when LoRA's size matters; it edits what the "
       "model thinks rather than its weights, so it cannot be folded into the model or exported to GGUF.",
       False, reft.ReftParams, peft_config=reft.loreft_config, fixed={"weight_decay": 0.0}),
    _m("direft", "DiReFT", "Representation editing",
       "LoReFT without the right-angle constraint and without subtracting the old value: a simpler, faster "
       "edit of the hidden state with the same tiny number of weights.",
       "Like LoReFT when speed matters more than the last bit of quality.",
       False, reft.ReftParams, peft_config=reft.direft_config, fixed={"weight_decay": 0.0}),
    _pref("dpo", "DPO", "preference", "dpo",
          "Learns from pairs of answers to the same prompt, one preferred: the preferred answer becomes "
          "more likely and the other less, measured against the model it started from so it does not "
          "drift far. Trains a LoRA adapter; the starting model is the same weights with it switched off.",
          "The standard way to teach preferences (chat votes, labeled pairs) after examples (SFT).",
          preference.DPOParams, reference=True),
    _pref("dpo_full", "DPO (full weights)", "preference", "dpo",
          "DPO where every weight of the model learns. A frozen copy of the starting model is kept "
          "to compare against, so it needs about twice the memory of the model plus training.",
          "Small models, when a LoRA adapter cannot capture the preference.",
          preference.DPOFullParams, reference=True, trainable=full.train_everything),
    _pref("kto", "KTO", "kto", "kto",
          "Learns from single answers marked good (thumbs up) or bad (thumbs down), no pairs needed: "
          "good answers become more likely than the model's average, bad ones less.",
          "When your feedback is thumbs up/down rather than 'this one is better than that one'.",
          preference.KTOParams, reference=True, validate=preference.check_kto),
    _pref("kto_full", "KTO (full weights)", "kto", "kto",
          "KTO where every weight of the model learns, against a frozen copy of the starting model.",
          "Small models, when a LoRA adapter cannot capture the feedback.",
          preference.KTOFullParams, reference=True, trainable=full.train_everything,
          validate=preference.check_kto),
    _pref("orpo", "ORPO", "preference", "orpo",
          "One stage instead of two: learns to write the preferred answers (like example-based training) "
          "and to prefer them over the rejected ones at the same time. No starting model to compare "
          "against, so it is lighter and faster than DPO.",
          "When you start from the base model and have preference pairs but no separate examples.",
          preference.ORPOParams),
    _pref("orpo_full", "ORPO (full weights)", "preference", "orpo",
          "ORPO where every weight of the model learns; no starting model is kept, so it needs no more "
          "memory than full fine-tuning.",
          "Small models, starting from the base, when you want one stage and the most capacity.",
          preference.ORPOFullParams, trainable=full.train_everything),
    _pref("simpo", "SimPO", "preference", "cpo",
          "DPO without a starting model to compare against: it scores each answer by its average "
          "likelihood per word, so longer answers are not favoured, and asks for a margin between the two.",
          "Like DPO, lighter and faster; good when preferred answers tend to be longer.",
          preference.SimPOParams, fixed={"loss_type": "simpo", "cpo_alpha": 0.0}),
    _pref("cpo", "CPO", "preference", "cpo",
          "Contrastive preference optimisation: prefers the chosen answer without a starting model to "
          "compare against, and also learns to write it (like example-based training).",
          "When the preferred answers are high quality and should also be imitated.",
          preference.CPOParams, fixed={"loss_type": "sigmoid"}),
    Method(key="grpo", label="GRPO", family="Reinforcement learning", data_kind="prompts",
           summary="The model writes several replies to each prompt, reward functions you choose score them "
           "(is the number right? is the format followed? does the code pass its tests?), and replies that "
           "beat their group's average become more likely. No examples of good replies needed: only prompts "
           "and a way to check a reply. Trains a LoRA adapter; a KL leash keeps it near where it started.",
           when_to_use="When a program can tell a good reply from a bad one (maths, formats, JSON, code), or "
           "to polish a model after example-based training (SFT).",
           mergeable=True, params=rl.GRPOParams, peft_config=preference.preference_lora_config,
           runner="pipelines.train_rl", trl="grpo", reference=True, validate=rl.check_grpo, packs=False,
           rewards=True),
    Method(key="rloo", label="RLOO", family="Reinforcement learning", data_kind="prompts",
           summary="REINFORCE with a leave-one-out baseline: the model writes several replies to each prompt and "
           "each reply is judged against the average reward of the others. Like GRPO it needs no value model "
           "(unlike PPO), so it is light; it differs in how the baseline is formed and scaled.",
           when_to_use="An alternative to GRPO with the same reward functions; the RLOO paper found it matches "
           "PPO's quality at a fraction of the memory. Prefer PPO when rewards come only at the end of long "
           "replies and you want a learned value estimate.",
           mergeable=True, params=rl.RLOOParams, peft_config=preference.preference_lora_config,
           runner="pipelines.train_rl", trl="rloo", reference=True, validate=rl.check_grpo, packs=False,
           rewards=True),
    Method(key="ppo", label="PPO (RLHF)", family="Reinforcement learning", data_kind="prompts",
           summary="The classic RLHF route: the model writes one reply per prompt, your reward functions (usually "
           "a reward model trained on preference pairs) score it, and PPO makes better-scored replies more "
           "likely. A value head learns to predict the score so each word gets credit; a KL leash keeps the "
           "model near where it started. Our own loop (TRL 1.x has none), after the PPO paper and 'The N+ "
           "implementation details of RLHF with PPO'.",
           when_to_use="Against a reward model, when you have preference pairs and want the model to generalise "
           "them to new prompts. Heavier than GRPO/RLOO (a value head, one more pass); prefer those when a "
           "program can check replies.",
           mergeable=True, params=rl.PPOParams, peft_config=preference.preference_lora_config,
           runner="pipelines.train_ppo", trl="ppo", reference=True, packs=False, rewards=True),
    Method(key="reward_model", label="Reward model", family="Reinforcement learning", data_kind="preference",
           summary="Learns to score replies the way your preference pairs rank them: a copy of the model that "
           "reads a prompt and a reply and gives one number, higher for replies people prefer. It writes "
           "nothing itself; GRPO can train a model against it, and the Chat tab can show each reply's score.",
           when_to_use="When what makes a reply good is easier to show with examples (chat votes, labeled pairs) "
           "than to write as a rule; the first step of the classic RLHF route.",
           mergeable=False, params=rl.RewardModelParams, peft_config=rl.reward_lora_config,
           runner="pipelines.train_rl", trl="reward", packs=False),
]}


def get_method(key: str) -> Method:
    if key not in METHODS:
        raise ConfigError(f"unknown method '{key}'{did_you_mean(key, METHODS)}; available methods: {', '.join(METHODS)}")
    return METHODS[key]


__all__ = ["METHODS", "ConfigError", "Method", "Setup", "describe", "get_method", "parse", "split_by_target"]


def adapted(model, config):
    """PEFT's model of `config` on `model`; a layer kind the adapter cannot wrap (LoHa and LoKr on GPT-2's
    Conv1D layers) as a ConfigError of one line, not PEFT's error mid-estimate or mid-run."""
    from peft import get_peft_model

    from peft.utils.error import NoMatchingPeftModuleError

    try:
        return get_peft_model(model, config)
    except NoMatchingPeftModuleError:  # a family whose layers are named unlike any the studio knows
        raise ConfigError(f"none of this model's layers ({type(model).__name__}) has a name this adapter's "
                          "targets know; pick 'all-linear' as the layers to adapt, or use LoRA") from None
    except (TypeError, ValueError) as err:  # (LoHa, LoKr: TypeError; LoRA, IA3, AdaLoRA: ValueError)
        if "not supported" not in str(err):
            raise
        first = str(err).strip().splitlines()[0].rstrip(".")
        raise ConfigError(f"this adapter cannot be put on this model's layers ({first}); use LoRA") from None

