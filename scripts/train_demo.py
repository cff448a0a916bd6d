#!/usr/bin/env python3
"""Trains LineaLM's built-in demo model, Models/demo (issue 17, item 6).

The demo model lets `linea generate --prompt "..."` print real text on a fresh machine without a download, and
gives the Swift side a perplexity to match: the one transformers computes here on held-out text.

What it does, in order:

1. Text. The King James Bible (public domain), from Debian's `bible-kjv-text` package. That package holds the
   text only in a compressed, random-access form (/usr/lib/bible.data), read by the `bible` program of the
   `bible-kjv` package; both are installed with apt-get when missing. `bible -f Gen1:1-Rev22:21` prints one
   verse per line as "Ge1:1 In the beginning ...": the reference is dropped (it is markup, not text), the verse
   kept as one line. A chapter is one document: its verses joined by "\n". Documents are separated by
   <|endoftext|> (id 0), which is also the end-of-sequence id.
   Held out: every 50th chapter of the Bible's 1,189 (chapter numbers 50, 100, ..., counted from Genesis 1 = 1),
   23 chapters, about 2% of the text, spread over the whole book rather than taken from its end (the last books
   are unlike the rest). The tokenizer and the model never see them.
2. Tokenizer. Byte-level BPE trained with Hugging Face `tokenizers` on the training chapters, 2,048 tokens:
   NFC normalizer, Qwen2's split regex (Isolated) then ByteLevel (add_prefix_space false, use_regex false),
   ByteLevel decoder and post-processor, <|endoftext|> as its one special token. This is the layout of Qwen2's
   and Qwen3's tokenizer.json, the one LineaLM's tokenizer implements. Wrapped in transformers'
   PreTrainedTokenizerFast and saved as tokenizer.json + tokenizer_config.json.
3. Model. transformers' `qwen3_next` (Qwen3NextForCausalLM), dense: hidden 256, 4 layers (3 Gated DeltaNet,
   then gated full attention, Qwen3-Next's every-fourth pattern), Gated DeltaNet with 2 key heads and 4 value
   heads of 64, attention with 4 query and 2 key/value heads of 64 and partial rotary 0.25, a dense MLP of 768
   on every layer (mlp_only_layers = all, num_experts 0), tied embeddings, vocabulary 2,048: 3.95M parameters.
   Trained in float32 on the CPU with one torch thread, through transformers' torch fallbacks of the causal
   convolution and the chunked gated delta rule (flash-linear-attention and causal-conv1d must not be
   installed; the script stops if they are). A training step at batch 16 x 256 takes about 1.5 s on one
   thread of the AMD EPYC this was trained on (a Llama of the same size, about 1.3 s), so the hybrid
   architecture was kept. AdamW, linear warm-up then cosine decay, random 256-token windows of the token stream,
   a fixed number of steps; everything is seeded.
4. Output, in Models/demo: config.json, model.safetensors (float32), generation_config.json (eos = 0),
   tokenizer.json, tokenizer_config.json, heldout.txt (the part of the held-out text the perplexity reads) and
   perplexity.json (the perplexity transformers computes on it, with its procedure spelled out so that the Swift
   side can repeat it exactly). The folder must stay under 20 MB; the script checks.
5. Greedy and sampled continuations of a few prompts, printed at the end.

The committed model: 1,300 steps (5.3M tokens, about 4.8 passes over the 1.1M training tokens) in 33.0 minutes,
final training loss 2.276 (mean of the last 50 steps), held-out perplexity 14.858 (perplexity.json).

Reproducing: python3 scripts/train_demo.py (about 35 minutes on one core). It pins transformers 5.25.0 and
tokenizers 0.23.3 (installing them with pip when another version is there); the committed model was trained with
torch 2.15.0. Runs with the same versions on the same kind of CPU give the same weights; other CPUs may round
differently and drift slightly.
"""
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

TRANSFORMERS_VERSION = "5.25.0"
TOKENIZERS_VERSION = "0.23.3"

from fixture_common import ensure  # noqa: E402

ensure("transformers", TRANSFORMERS_VERSION)
ensure("tokenizers", TOKENIZERS_VERSION)

# transformers prefers these packages' kernels when they are importable. The demo model must be the one that
# the torch code trains and evaluates (what every user without a GPU runs), so they must be absent.
for module in ["fla", "causal_conv1d"]:
    if importlib.util.find_spec(module) is not None:
        sys.exit(f"{module} is installed: uninstall it so that transformers runs its torch fallback")

# The BPE trainer counts pairs on several threads; one keeps its ties in a reproducible order.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3NextConfig, Qwen3NextForCausalLM  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.normpath(os.path.join(ROOT, "Models", "demo"))

SEED = 1234
HELDOUT_EVERY = 50  # every 50th chapter is held out
VOCAB = 2048
EOS = "<|endoftext|>"
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Training. The step count was picked from the measured step time (about 1.5 s at batch 16 x 256 on one thread)
# to fit about 35 minutes; it is fixed rather than a time limit so that a rerun does the same training.
SEQ = 256
BATCH = 16
STEPS = 1300
WARMUP = 60
LR = 2e-3
MIN_LR_RATIO = 0.1  # the cosine ends at 10% of LR
WEIGHT_DECAY = 0.1
CLIP = 1.0
CHECKPOINT_EVERY = 200  # a partial model in Models/demo if the run is stopped

# Perplexity: the first EVAL_TOKENS held-out tokens, in non-overlapping windows of EVAL_WINDOW.
EVAL_TOKENS = 4096
EVAL_WINDOW = 256

PROMPTS = ["In the beginning", "And the LORD said", "Blessed are the", "Jesus wept"]

torch.set_num_threads(1)  # one core for this, one left for the rest of the machine


def seed_everything():
    import random
    random.seed(SEED)
    torch.manual_seed(SEED)


# ---------------------------------------------------------------------------------------------------- text


def read_bible():
    """The verses, as (book, chapter, text), in the Bible's order."""
    if shutil.which("bible") is None or not os.path.exists("/usr/lib/bible.data"):
        subprocess.check_call(["apt-get", "install", "-y", "bible-kjv-text", "bible-kjv"])
    files = subprocess.check_output(["dpkg", "-L", "bible-kjv-text"], text=True).split()
    data = [f for f in files if f.endswith("/bible.data")]
    assert data, "bible-kjv-text ships no bible.data"
    # -f turns pretty-printing off: one verse per line, preceded by its reference.
    out = subprocess.check_output(["bible", "-f", "-p", os.path.dirname(data[0]), "Gen1:1-Rev22:21"],
                                  text=True, cwd="/")
    verses = []
    for line in out.splitlines():
        m = re.fullmatch(r"(\d?[A-Za-z]+)(\d+):(\d+) (.+)", line)
        assert m, f"unexpected line from bible: {line!r}"
        verses.append((m.group(1), int(m.group(2)), m.group(4).strip()))
    assert len(verses) == 31102, len(verses)
    return verses


def chapters_of(verses):
    """One document per chapter: its verses joined by newlines."""
    chapters, key = [], None
    for book, chapter, text in verses:
        if (book, chapter) != key:
            chapters.append([])
            key = (book, chapter)
        chapters[-1].append(text)
    return ["\n".join(c) for c in chapters]


# ---------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(documents):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # All 256 byte symbols are in the vocabulary whether or not the text uses them, so any input encodes.
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[EOS])
    tok.train_from_iterator(documents, trainer)
    assert tok.token_to_id(EOS) == 0 and tok.get_vocab_size() == VOCAB
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=None, unk_token=None,
                                   pad_token=EOS, model_max_length=2048, clean_up_tokenization_spaces=False)


def stream(tokenizer, documents):
    """The token ids of the documents, each followed by <|endoftext|>, as one long tensor."""
    ids = []
    # The backend tokenizer directly: the wrapper warns about every document longer than model_max_length.
    for encoded in tokenizer.backend_tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoded.ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


# -------------------------------------------------------------------------------------------------- model


def model_config():
    layers = 4
    return Qwen3NextConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=layers,
        # Three Gated DeltaNet layers, then gated softmax attention: Qwen3-Next's pattern.
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=64,
        linear_value_head_dim=64,
        linear_num_key_heads=2,
        linear_num_value_heads=4,  # each key head shared by two value heads
        # Dense: no experts, every layer a plain gated MLP. A mixture of experts would only slow a model this
        # small down; LineaLM's MoE path is checked by the parity fixtures instead.
        num_experts=0,
        mlp_only_layers=list(range(layers)),
        tie_word_embeddings=True,  # the embedding is half a million parameters; tying keeps the file small
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=0,
        initializer_range=0.02,
    )


def learning_rate(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, STEPS - WARMUP)
    return LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def save(model, tokenizer):
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)  # float32, tied lm_head left out of model.safetensors
    tokenizer.save_pretrained(OUT)
    # save_pretrained may add files LineaLM does not read (chat_template.jinja, special_tokens_map.json).
    keep = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "perplexity.json", "heldout.txt"}
    for name in os.listdir(OUT):
        if name not in keep:
            os.remove(os.path.join(OUT, name))


def train(model, tokenizer, ids):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norms, A_log, dt_bias, conv biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.95), eps=1e-8)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    losses, start, step = [], time.time(), 0
    try:
        for step in range(STEPS):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step)
            # Random windows of the token stream: a window may cross a chapter boundary and its <|endoftext|>,
            # as text after a separator is what the model should learn to start.
            starts = torch.randint(0, len(ids) - SEQ, (BATCH,), generator=generator)
            batch = torch.stack([ids[s:s + SEQ] for s in starts.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if (step + 1) % 20 == 0 or step == 0:
                elapsed = time.time() - start
                print(f"step {step + 1}/{STEPS}  loss {sum(losses[-20:]) / len(losses[-20:]):.4f}  "
                      f"lr {learning_rate(step):.2e}  {elapsed / (step + 1):.2f} s/step  {elapsed / 60:.1f} min",
                      flush=True)
            if (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < STEPS:
                save(model, tokenizer)
    except KeyboardInterrupt:
        # Stopped by hand: keep what has been trained and go on to the evaluation and the samples.
        print(f"interrupted after {len(losses)} steps", flush=True)
    model.eval()
    return losses, time.time() - start


# ------------------------------------------------------------------------------------------------ evaluation


PROCEDURE = (
    "ids = the tokenizer's encoding of heldout.txt (UTF-8, read whole; no special tokens added, each literal "
    "<|endoftext|> in the text is the special token id 0); keep the first {tokens} ids; split them into {windows} "
    "non-overlapping windows of {window} ids; run each window through one full forward from an empty state "
    "(positions 0..{last}, no cache, no earlier window); at every position t < {last} of a window take "
    "log_softmax of the float32 logits in float64 and the negative log-probability of the id at t+1; "
    "perplexity = exp(mean of these {n} values) ({windows} windows x {predicted} predictions; the last id of "
    "each window is never predicted from the next window's ids and the first id of each window is never "
    "predicted)."
)


def perplexity(model, ids):
    windows = ids[:EVAL_TOKENS].view(-1, EVAL_WINDOW)
    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            logits = model(input_ids=window[None]).logits[0].double()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            total -= logp.gather(1, window[1:, None]).sum().item()
            count += EVAL_WINDOW - 1
    return math.exp(total / count), count


def greedy(model, tokenizer, prompt, new_tokens):
    # Repeated full forwards, no cache: the plain definition of greedy decoding.
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(new_tokens):
            next_id = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
            if next_id.item() == tokenizer.eos_token_id:
                break
    return ids


def main():
    seed_everything()
    print(f"transformers {transformers.__version__}, tokenizers {importlib.metadata.version('tokenizers')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread")

    chapters = chapters_of(read_bible())
    heldout = [c for i, c in enumerate(chapters) if (i + 1) % HELDOUT_EVERY == 0]
    training = [c for i, c in enumerate(chapters) if (i + 1) % HELDOUT_EVERY != 0]
    print(f"{len(chapters)} chapters: {len(training)} for training, {len(heldout)} held out")

    tokenizer = train_tokenizer(training)
    ids = stream(tokenizer, training)
    print(f"tokenizer: {VOCAB} tokens; training text {sum(map(len, training))} characters, {len(ids)} tokens")

    # heldout.txt: the held-out chapters, each followed by <|endoftext|> as in training, as many whole chapters
    # as it takes to reach EVAL_TOKENS tokens.
    used = []
    while len(stream(tokenizer, used)) < EVAL_TOKENS:
        used.append(heldout[len(used)])
    heldout_text = "".join(c + EOS for c in used)
    heldout_ids = torch.tensor(tokenizer.backend_tokenizer.encode(heldout_text, add_special_tokens=False).ids,
                               dtype=torch.long)
    assert torch.equal(heldout_ids, stream(tokenizer, used)), "heldout.txt does not encode as its chapters do"

    config = model_config()
    torch.manual_seed(SEED)
    model = Qwen3NextForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=0, pad_token_id=0)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"qwen3_next: {parameters} parameters ({parameters - VOCAB * config.hidden_size} without the embedding)")

    losses, seconds = train(model, tokenizer, ids)
    final_loss = sum(losses[-50:]) / len(losses[-50:])

    ppl, count = perplexity(model, heldout_ids)
    windows = EVAL_TOKENS // EVAL_WINDOW
    procedure = PROCEDURE.format(tokens=EVAL_TOKENS, windows=windows, window=EVAL_WINDOW, last=EVAL_WINDOW - 1,
                                 n=count, predicted=EVAL_WINDOW - 1)

    save(model, tokenizer)
    with open(os.path.join(OUT, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(heldout_text)
    with open(os.path.join(OUT, "perplexity.json"), "w") as f:
        json.dump({
            "heldout_tokens": EVAL_TOKENS,
            "predicted_tokens": count,
            "window": EVAL_WINDOW,
            "perplexity": ppl,
            "mean_nll": math.log(ppl),
            "heldout_file": "heldout.txt",
            "heldout_chapters": f"chapters {', '.join(str(HELDOUT_EVERY * (i + 1)) for i in range(len(used)))} "
                                f"of 1189 (every {HELDOUT_EVERY}th chapter from Genesis 1 is held out; these are "
                                f"the first {len(used)})",
            "procedure": procedure,
            "transformers": transformers.__version__,
            "tokenizers": importlib.metadata.version("tokenizers"),
            "torch": torch.__version__,
        }, f, indent=2)
        f.write("\n")

    # The reload must give the same numbers: it is what LineaLM and anyone else will load.
    reloaded = Qwen3NextForCausalLM.from_pretrained(OUT, dtype=torch.float32).eval()
    assert abs(perplexity(reloaded, heldout_ids)[0] - ppl) < 1e-9 * ppl, "the saved model differs"

    sizes = {name: os.path.getsize(os.path.join(OUT, name)) for name in sorted(os.listdir(OUT))}
    total = sum(sizes.values())
    assert total <= 20 * 1000 * 1000, f"Models/demo is {total} bytes, over 20 MB"

    print("\nsamples")
    summary_sample = None
    for prompt in PROMPTS:
        ids_greedy = greedy(model, tokenizer, prompt, 48)
        text = tokenizer.decode(ids_greedy[0])
        summary_sample = summary_sample or text
        print(f"greedy  | {text!r}")
        inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        cached = model.generate(**inputs, do_sample=False, max_new_tokens=ids_greedy.shape[1] - inputs["input_ids"].shape[1])
        if not torch.equal(cached, ids_greedy):
            print("  warning: transformers' cached generate differs from repeated full forwards")
        for seed in [1, 2]:
            torch.manual_seed(seed)
            sampled = model.generate(**inputs, do_sample=True, temperature=0.8, top_k=40, top_p=0.95,
                                     max_new_tokens=48)
            print(f"sampled | {tokenizer.decode(sampled[0])!r}")

    print("\nsummary")
    print(f"  model: qwen3_next, hidden 256, 4 layers (3 Gated DeltaNet + 1 gated attention), vocab {VOCAB}, "
          f"{parameters} parameters")
    print(f"  training: {len(losses)} steps of {BATCH} x {SEQ} tokens in {seconds / 60:.1f} min, "
          f"final loss {final_loss:.4f} (mean of the last 50 steps), last step {losses[-1]:.4f}")
    print(f"  held-out perplexity: {ppl:.4f} over {count} predictions")
    for name, size in sizes.items():
        print(f"  {name}: {size} bytes")
    print(f"  total: {total} bytes")
    print(f"  greedy: {summary_sample!r}")


if __name__ == "__main__":
    main()
