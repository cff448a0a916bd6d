#!/usr/bin/env python3
"""Builds LineaLM's model parity fixtures under Tests/LineaLMTests/Fixtures/models (issue 17, item 7).

Each fixture is a tiny checkpoint of random weights, built with Hugging Face transformers on the CPU in
float32, together with the reference outputs the Swift tests compare against:

    models/<name>/config.json             as save_pretrained writes it
    models/<name>/generation_config.json  when transformers writes one
    models/<name>/model.safetensors       f32 weights, as save_pretrained writes them (tied weights left out)
    models/<name>/expected.safetensors    input_ids_48 I64 [1,48], input_ids_1 I64 [1,1],
                                          logits_48 F32 [1,48,vocab], logits_1 F32 [1,1,vocab],
                                          greedy_48 I64 [1,16], greedy_1 I64 [1,16],
                                          top2_gap_48 F32 [16], top2_gap_1 F32 [16]

The logits are one forward over the whole prompt without a cache. The greedy continuations are computed by
repeated full forwards (argmax of the last position, append, forward again), never through transformers'
cached decode: that path is what the fixtures are meant to check Linea's against, and transformers has had it
wrong for some of these models (Mamba-1's selective scan starts every multi-token forward from a zero state,
so a prefill that follows cached tokens drops them; the hybrid models' prefill in pieces, its PR #45513). `generate` is still run and compared, and a disagreement is printed as a
warning rather than failing the script. The end-of-sequence id never stops a continuation: it is 16 tokens
whatever comes out. top2_gap_* is the gap between the largest and the second largest logit at each greedy
step, so a consumer with rounding of its own can tell a near-tie from a real disagreement.

Only the torch paths run: flash-linear-attention, causal-conv1d and mamba-ssm must not be importable (the
script stops if one is), so the Gated DeltaNet goes through transformers' torch_chunk_gated_delta_rule and
torch_recurrent_gated_delta_rule, and Mamba/Mamba-2 through their torch scans.

Versions used for the committed fixtures: transformers 5.25.0 (the newest release, which has qwen3_next and
qwen3_5), torch 2.15.0 (CPU), safetensors 0.8.0. The script installs the pinned transformers and safetensors
with pip when they are missing or of another version.

Run from anywhere: python3 scripts/model_fixtures.py [FOLDER ...]  (default: every fixture)
"""
import copy
import importlib
import importlib.util
import os
import shutil
import sys

TRANSFORMERS_VERSION = "5.25.0"
SAFETENSORS_VERSION = "0.8.0"

from fixture_common import ensure, folder_bytes, full_logits, random_prompt, special_ids  # noqa: E402


ensure("transformers", TRANSFORMERS_VERSION)
ensure("safetensors", SAFETENSORS_VERSION)

# transformers silently prefers these packages' kernels when they are importable; the references must come
# from the torch code, which is what every user without a GPU runs.
for module in ["fla", "causal_conv1d", "mamba_ssm"]:
    if importlib.util.find_spec(module) is not None:
        sys.exit(f"{module} is installed: uninstall it so that transformers runs its torch fallback")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    FalconMambaConfig,
    GenerationConfig,
    KimiLinearConfig,
    LlamaConfig,
    Mamba2Config,
    MambaConfig,
    Qwen3_5MoeTextConfig,
    Qwen3_5TextConfig,
    Qwen3NextConfig,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "LineaLMTests", "Fixtures", "models")

# Sizes: issue 17 wants the committed fixtures under 5 MB, and the whole Tests/LineaLMTests/Fixtures folder is
# kept under 5 MB: the tokenizer fixtures take 0.6 MB, scripts/fla_fixtures.py's eight folders at most 1.6 MB, and
# these ten folders at most SIZE_LIMIT (kimi_linear, the tenth, takes 0.23 MB). Embeddings and the 48-token logits grow with the vocabulary and exercise
# nothing, so the vocabulary is 256 (the logits alone are 48 KiB a fixture); the families whose small real
# checkpoints tie their embeddings (Qwen3.5, Mamba-2) tie them here too. The residual stream is 32 wide: every
# mechanism below is a matter of head counts, head dims, kernel sizes and layer patterns, which are kept as the
# comments say, not of the hidden size, so the projections into and out of the heads are wider than the stream
# (4 query heads of 16 from 32). Llama's MLP is 64 wide, the Qwen dense MLPs 32, their experts and shared expert
# 16, and their Gated DeltaNet heads 8 (keys and values).
VOCAB = 256
HIDDEN = 32
SIZE_LIMIT = 2_450_000  # these ten folders together
NEW_TOKENS = 16
PROMPT_LENGTHS = [48, 1]

# transformers' default initializer_range (0.02) leaves a model this narrow nearly linear: attention almost
# uniform, router scores almost equal and the logits within ~0.1 of each other, so that greedy steps are
# near-ties and a wrong rotary or gate would barely move the logits. A wider init gives every mechanism a
# visible effect on the outputs: 0.1 did at hidden 64 (logits with a standard deviation of ~0.8); at hidden 32 a
# projection's output shrinks by sqrt(2) for the same init, the logits' deviation fell to ~0.55 and llama_tied's
# continuation of the 48-token prompt was one token repeated, so the init is 0.14 (~0.1 * sqrt(2)), which gives
# the ~0.8 back.
INIT_RANGE = 0.14

# The files a fixture folder may hold; anything else save_pretrained writes is an error.
ALLOWED_FILES = {"config.json", "generation_config.json", "model.safetensors", "expected.safetensors"}


def llama_config(tied):
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if tied:
        # original_max_position_embeddings is small so that the llama3 rule meets all three of its cases at
        # head_dim 16: the shortest wavelength kept, the longest divided by factor, two in between smoothed.
        rope = {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_parameters=rope,
        tie_word_embeddings=tied,
        initializer_range=INIT_RANGE,
    )


def qwen3_next_config(dense):
    layers = 4
    return Qwen3NextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        # The dense MLP's width; with mlp_only_layers empty no layer has one, but both variants carry it
        # so that their configs differ in mlp_only_layers alone.
        intermediate_size=32,
        num_hidden_layers=layers,
        # Three Gated DeltaNet layers, then gated softmax attention: the real models' pattern, every fourth.
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_num_key_heads=2,
        # More value heads than key heads: each key head is shared by two value heads.
        linear_num_value_heads=4,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
        decoder_sparse_step=1,
        norm_topk_prob=True,
        # The dense variant keeps the same mixers and isolates the mixture of experts.
        mlp_only_layers=list(range(layers)) if dense else [],
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )


# Qwen3.5's text mixers: Qwen3-Next's with split input projections. The multimodal rotary fields are there because
# real checkpoints carry them; with text positions (the same for the three grids) they change nothing. mrope_section
# sums to the rotary pairs (16 * 0.25 / 2).
QWEN3_5_MIXERS = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=4,
    layer_types=["linear_attention"] * 3 + ["full_attention"],
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [1, 1, 0],
        "mrope_interleaved": True,
    },
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    linear_conv_kernel_dim=4,
    linear_key_head_dim=8,
    linear_value_head_dim=8,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    initializer_range=INIT_RANGE,
)


def qwen3_5_config():
    # Qwen3.5's dense text model.
    return Qwen3_5TextConfig(**QWEN3_5_MIXERS, intermediate_size=32, tie_word_embeddings=True)


def qwen3_5_moe_config():
    # Qwen3.5's MoE text model: every layer's MLP a sparse mixture of experts (the router always renormalizes its
    # top-k) plus a gated shared expert; no dense MLP and no intermediate_size.
    return Qwen3_5MoeTextConfig(**QWEN3_5_MIXERS, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                shared_expert_intermediate_size=16, tie_word_embeddings=False)


def mamba2_config():
    # hidden 32 * expand 2 = 4 heads of 16; two groups of B and C shared by two heads each. chunk_size 16 puts
    # the 48-token prompt over three chunks. time_step_limit stays (0, inf), which config.json writes as a
    # bare Infinity.
    return Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_heads=4,
        head_dim=16,
        expand=2,
        state_size=16,
        n_groups=2,
        conv_kernel=4,
        chunk_size=16,
        tie_word_embeddings=True,
        initializer_range=INIT_RANGE,
    )


def mamba_config():
    return MambaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        state_size=16,
        conv_kernel=4,
        expand=2,
        # Real Mamba-1 checkpoints tie their embeddings, but here the two mixers barely move the residual
        # stream, so that tied logits peak at the current token and greedy decoding repeats the prompt's last
        # token whatever the mixers compute. An output head of its own makes the continuation depend on them.
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )


def falcon_mamba_config():
    # Mamba-1 with dt, B and C RMS-normalized (no weight) before the scan.
    return FalconMambaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        state_size=16,
        conv_kernel=4,
        expand=2,
        mixer_rms_eps=1e-6,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )


def kimi_linear_config():
    # Kimi-Linear written as Moonshot's checkpoints write it: the KDA and MLA layers 1-indexed under
    # linear_attn_config (three KDA layers, then MLA: the released 3:1 pattern), the first layer's MLP dense per
    # first_k_dense_replace, the experts' fields under Moonshot's names (num_experts, num_experts_per_token,
    # num_expert_group, moe_renormalize, num_shared_experts). Six experts in two groups of three with one group
    # kept, so that the grouped top-k changes the choice; two KDA heads of 8, experts (and the shared expert) 4 wide, a dense MLP 16 wide and a KV latent of 8 keep the folder
    # under 250 KB; q_lora_rank null as released; MLA's value heads (8) are
    # narrower than its query/key heads (8 nope + 8 shared, unrotated: Kimi-Linear's MLA has no rotary).
    return KimiLinearConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=16,
        moe_intermediate_size=4,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        kv_lora_rank=8,
        q_lora_rank=None,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=8,
        num_experts=6,
        num_experts_per_token=2,
        num_expert_group=2,
        topk_group=1,
        moe_renormalize=True,
        num_shared_experts=1,
        routed_scaling_factor=2.446,
        linear_attn_config={"kda_layers": [1, 2, 3], "full_attn_layers": [4], "head_dim": 8, "num_heads": 2,
                            "short_conv_kernel_size": 4},
        first_k_dense_replace=1,
        rms_norm_eps=1e-5,
        model_max_length=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )


# (folder, seed, config builder). Each seed is fixed so that a rerun writes the same bytes.
ARCHITECTURES = [
    ("llama", 1001, lambda: llama_config(tied=False)),
    ("llama_tied", 1002, lambda: llama_config(tied=True)),
    ("qwen3_next", 1003, lambda: qwen3_next_config(dense=False)),
    ("qwen3_next_dense", 1004, lambda: qwen3_next_config(dense=True)),
    ("mamba2", 1005, mamba2_config),
    ("qwen3_5", 1006, qwen3_5_config),
    ("mamba", 1007, mamba_config),
    ("qwen3_5_moe", 1008, qwen3_5_moe_config),
    ("falcon_mamba", 1009, falcon_mamba_config),
    ("kimi_linear", 1010, kimi_linear_config),
]


def perturb_vectors(model, generator):
    # Initializers set norm weights, biases, dt_bias and D to constants (ones or zeros). A loader that
    # ignored one of them, or read it with the wrong centering (Qwen's (1 + w) norms), would still match;
    # noise on every vector parameter makes each of them count.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(0.1 * noise)
        # Kimi-Linear's router bias is a buffer (zeros at init): noise makes the biased choice differ from the
        # unbiased weights it gathers.
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.add_(0.1 * torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype))


@torch.no_grad()
def greedy_by_full_forwards(model, input_ids):
    # The reference semantics of a greedy continuation: every step sees the whole sequence afresh.
    sequence = input_ids
    tokens, gaps = [], []
    for _ in range(NEW_TOKENS):
        last = full_logits(model, sequence)[0, -1]
        top2 = torch.topk(last, 2).values
        token = torch.argmax(last)
        tokens.append(int(token))
        gaps.append(float(top2[0] - top2[1]))
        sequence = torch.cat([sequence, token.view(1, 1)], dim=1)
    return torch.tensor([tokens], dtype=torch.int64), torch.tensor(gaps, dtype=torch.float32)


@torch.no_grad()
def greedy_by_generate(model, input_ids):
    # The end-of-sequence id has to go from the model's own generation config: generate fills a None in the
    # config it is given from there, and min_new_tokens would then mask that id out of the logits, changing
    # the argmax whenever it wins. With no id at all, nothing is masked and nothing stops early.
    saved = model.generation_config
    model.generation_config = copy.deepcopy(saved)
    model.generation_config.eos_token_id = None
    try:
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            eos_token_id=None,
            pad_token_id=0,
        )
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
        )
    finally:
        model.generation_config = saved
    return output[:, input_ids.shape[1]:]


def build(name, seed, make_config):
    torch.manual_seed(seed)
    config = make_config()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    perturb_vectors(model, torch.Generator().manual_seed(seed + 1))

    prompt_generator = torch.Generator().manual_seed(seed + 2)
    excluded = special_ids(model)
    expected = {}
    for length in PROMPT_LENGTHS:
        input_ids = random_prompt(length, prompt_generator, excluded, VOCAB)
        tokens, gaps = greedy_by_full_forwards(model, input_ids)
        expected[f"input_ids_{length}"] = input_ids
        expected[f"logits_{length}"] = full_logits(model, input_ids).float().contiguous()
        expected[f"greedy_{length}"] = tokens
        expected[f"top2_gap_{length}"] = gaps

        generated = greedy_by_generate(model, input_ids)
        if generated.shape != tokens.shape:
            print(f"WARNING {name}: generate made {generated.shape[1]} tokens for the {length}-token prompt")
        elif not torch.equal(generated, tokens):
            first = int((generated != tokens).int().argmax())
            print(f"WARNING {name}: generate disagrees with full forwards for the {length}-token prompt "
                  f"from step {first} (gap there {gaps[first]:.3g}):\n  full     {tokens.tolist()[0]}\n"
                  f"  generate {generated.tolist()[0]}")

    # A continuation that repeats one token checks little beyond its first step (a tied model whose mixers barely
    # move the residual stream does that: see mamba_config).
    distinct = min(len(set(expected[f"greedy_{length}"][0].tolist())) for length in PROMPT_LENGTHS)
    if distinct < 2:
        sys.exit(f"{name}: a greedy continuation is one token repeated")

    directory = os.path.join(ROOT, name)
    shutil.rmtree(directory, ignore_errors=True)
    # transformers 5 always writes safetensors (safe_serialization is gone from save_pretrained's arguments),
    # and by default in the checkpoint's original layout: Qwen3-Next's experts one by one, as released.
    model.save_pretrained(directory)
    save_file(expected, os.path.join(directory, "expected.safetensors"))
    extra = set(os.listdir(directory)) - ALLOWED_FILES
    if extra:
        sys.exit(f"{name}: save_pretrained wrote unexpected files {sorted(extra)}")

    # The saved files must reproduce the logits on their own, through the same loading path a user takes.
    reloaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    for length in PROMPT_LENGTHS:
        again = full_logits(reloaded, expected[f"input_ids_{length}"])
        difference = float((again - expected[f"logits_{length}"]).abs().max())
        if difference >= 1e-5:
            sys.exit(f"{name}: reloaded logits differ by {difference:.3g} for the {length}-token prompt")

    parameters = sum(p.numel() for p in model.parameters())
    size = folder_bytes(directory)
    print(f"{name:18s} {config.model_type:14s} {parameters:8d} parameters  {size / 1024:7.1f} KiB  "
          f"min gap {min(float(expected['top2_gap_48'].min()), float(expected['top2_gap_1'].min())):.3g}  "
          f"distinct greedy {distinct}")
    return size


def main():
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)  # the machine is shared; these models are tiny anyway
    os.makedirs(ROOT, exist_ok=True)
    total = 0
    only = set(sys.argv[1:])  # folder names to rebuild (default: all)
    for name, seed, make_config in ARCHITECTURES:
        if not only or name in only:
            total += build(name, seed, make_config)
    print(f"total {total / 1024:.1f} KiB in {os.path.normpath(ROOT)}")
    if not only and total > SIZE_LIMIT:
        sys.exit(f"the model fixtures take {total} bytes, over the {SIZE_LIMIT} allowed")


if __name__ == "__main__":
    main()
