"""transformers as the oracle: random Mamba1 / FalconMamba / Mamba2 models and their checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

# (model_type, config kwargs): shapes chosen to exercise what differs between checkpoints:
# widths that are not multiples of the kernels' blocks, biases on/off, tied/untied heads,
# FalconMamba's B/C/dt norms, Mamba2 groups > 1, chunk sizes that do not divide the length.
RANDOM_CONFIGS: dict[str, tuple[str, dict]] = {
    "mamba1": ("mamba", dict(vocab_size=97, hidden_size=48, state_size=8, num_hidden_layers=2, conv_kernel=4)),
    "mamba1-bias-untied": (
        "mamba",
        dict(
            vocab_size=64,
            hidden_size=40,
            state_size=16,
            num_hidden_layers=3,
            conv_kernel=3,
            use_bias=True,
            use_conv_bias=False,
            tie_word_embeddings=False,
            time_step_rank=5,
            residual_in_fp32=False,
        ),
    ),  # fmt: skip
    "falcon_mamba": (
        "falcon_mamba",
        dict(vocab_size=80, hidden_size=32, state_size=8, num_hidden_layers=2, mixer_rms_eps=1e-5),
    ),
    "mamba2-groups": (
        "mamba2",
        dict(
            vocab_size=96,
            hidden_size=64,
            state_size=16,
            num_hidden_layers=2,
            num_heads=8,
            head_dim=16,
            n_groups=2,
            chunk_size=16,
            tie_word_embeddings=True,
        ),
    ),  # fmt: skip
    "mamba2-g4-untied-limit": (
        "mamba2",
        dict(
            vocab_size=50,
            hidden_size=48,
            state_size=8,
            num_hidden_layers=2,
            num_heads=12,
            head_dim=8,
            n_groups=4,
            chunk_size=8,
            tie_word_embeddings=False,
            use_conv_bias=False,
            time_step_limit=(0.0, 0.05),
        ),
    ),  # fmt: skip
}


def hf_classes(model_type: str):
    import transformers as tf

    return {
        "mamba": (tf.MambaConfig, tf.MambaForCausalLM),
        "falcon_mamba": (tf.FalconMambaConfig, tf.FalconMambaForCausalLM),
        "mamba2": (tf.Mamba2Config, tf.Mamba2ForCausalLM),
    }[model_type]


def random_hf_model(name: str, seed: int = 0):
    """A transformers model of RANDOM_CONFIGS[name] with every parameter perturbed (so a parameter
    that is ignored or misused by the code under test changes the output)."""
    model_type, kwargs = RANDOM_CONFIGS[name]
    config_cls, model_cls = hf_classes(model_type)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).float().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2.5 - 0.5)
            else:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g)).add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def save_random_checkpoint(name: str, directory: Path, seed: int = 0, weights: str = "safetensors", **save_kwargs):
    """Save a random model as transformers does; ``weights="bin"`` writes pytorch_model.bin the way
    older transformers did (transformers 5 only writes safetensors)."""
    model = random_hf_model(name, seed)
    if weights == "bin":
        Path(directory).mkdir(parents=True, exist_ok=True)
        model.config.to_json_file(Path(directory) / "config.json")
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, Path(directory) / "pytorch_model.bin")
    else:
        model.save_pretrained(directory, **save_kwargs)
    return model


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()
