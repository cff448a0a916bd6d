"""Pieces the fixture and training scripts share (scripts/model_fixtures.py, scripts/fla_fixtures.py,
scripts/train_demo.py). Importing it installs nothing and imports no torch: `ensure` runs before torch is importable.
"""
import importlib.metadata
import os
import subprocess
import sys


def ensure(distribution, version):
    """pip-installs `distribution==version` unless that version is the one installed."""
    try:
        if importlib.metadata.version(distribution) == version:
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", f"{distribution}=={version}"])


def special_ids(model):
    """The eos, bos and pad ids of a model's config and generation config."""
    ids = set()
    for source in (model.config, model.generation_config):
        for field in ("eos_token_id", "bos_token_id", "pad_token_id"):
            value = getattr(source, field, None)
            if value is None:
                continue
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


def random_prompt(length, generator, excluded, vocab):
    """[1, length] ids drawn from 0..<vocab without the excluded ones."""
    import torch
    allowed = torch.tensor([i for i in range(vocab) if i not in excluded], dtype=torch.int64)
    picks = torch.randint(0, len(allowed), (1, length), generator=generator)
    return allowed[picks]


def full_logits(model, input_ids):
    """The logits of one forward over the whole prompt, without a cache."""
    import torch
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False).logits


def folder_bytes(directory):
    """Bytes of the files in a folder."""
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
