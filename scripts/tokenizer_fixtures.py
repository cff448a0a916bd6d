#!/usr/bin/env python3
"""Builds the LineaLM tokenizer fixtures under Tests/LineaLMTests/Fixtures.

Three small tokenizer.json files are trained here with the `tokenizers` library (byte-level BPE with the
Qwen2 split regex, byte-level BPE with GPT-2's regex and the legacy "a b" merge strings, and a
sentencepiece-style BPE with byte fallback as Llama-2 ships it), so no model is downloaded. Each one's
expected ids and decodes come from `tokenizers` loading the very file the Swift tests read.

The chat templates in Fixtures/templates are the ones the models ship in tokenizer_config.json; their
expected renders come from transformers' own `render_jinja_template` (jinja2 with trim_blocks and
lstrip_blocks, its tojson and raise_exception), as `apply_chat_template(..., tokenize=False)` calls it.

Run from the repository root: python3 scripts/tokenizer_fixtures.py
(The trainer breaks ties between equally frequent pairs differently from run to run for the sentencepiece-style
tokenizer, so a rerun may rewrite spbpe/ with a different but equally valid vocabulary and its expectations.)
"""
import importlib
import json
import os
import subprocess
import sys

for module, package in [("tokenizers", "tokenizers"), ("transformers", "transformers"), ("jinja2", "jinja2")]:
    try:
        importlib.import_module(module)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", package])

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "LineaLMTests", "Fixtures")

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Training text: a few KB written for these fixtures, mixing the scripts, digits and code the tests probe.
CORPUS = """
The quick brown fox jumps over the lazy dog. The dog did not mind; it was asleep in the sun.
A tokenizer splits text into pieces, and the model only ever sees the numbers of those pieces.
It's the merges that decide which pieces exist: frequent pairs of bytes become one token.
We'll train a very small vocabulary here, so that long words break into several tokens.
They're testing contractions too: I'm, you've, she'd, we'll, it's, don't, can't, won't.
Numbers appear in many forms: 1, 22, 333, 4444, 55555, 3.14159, 2,718, 1e-9, 0xFF, 2024-05-17.
Prices: $10.99, €5, £3.50, ¥1200. Percentages: 12%, 99.9%, 100%.
Café, naïve, résumé, façade, jalapeño, Ångström, Straße, Œuvre, Ærø.
Русский текст для проверки кириллицы. Ελληνικά γράμματα επίσης.
日本語の文章も少し入れておきます。中文的句子也需要测试一下。한국어 문장도 있습니다.
العربية تكتب من اليمين إلى اليسار. עברית גם כן.
def square(x):
    return x * x  # a comment

for i in range(10):
    print(f"value {i}: {square(i)}")

if (a && b) || !c { return -1; }
<html><body class="main">Hello, world!</body></html>
    Indented line with four spaces.
\tA line with a tab.
Emoji are several bytes each: 😀 🎉 👍 🚀 ❤️ and flags 🇫🇷.
Lines end with newlines.

Some paragraphs are separated by blank lines.


And sometimes by more than one.
"""
CORPUS = CORPUS * 3

# Strings the tests encode: each probes a rule of the pre-tokenizer, the normalizer or the added tokens.
STRINGS = [
    "",
    " ",
    "   ",
    "Hello world",
    " Hello",
    "  Hello  world  ",
    "hello  world   !",
    "HELLO'S WORLD'LL BE FINE, I'M SURE. YOU'RE, WE'VE, THEY'D, DON'T",
    "don't can't won't we've you're they'd it's",
    "O'Neil's 'quoted' ''",
    "naïve café résumé Ångström Straße",
    "cafe\u0301 and e\u0301\u0301",
    "日本語のテキスト、中文测试。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "😀",
    "1234567890 3.14159 12,345,678 9999999999999999",
    "a1b22c333d4444",
    "tab\there\tand\nnewline\n\n\nmany\r\nwindows\r\n",
    "   leading and trailing   ",
    "\n\n  \n",
    "x \n y",
    "end with spaces  ",
    "a\u00a0b\u3000c\u2003d",
    "zero\u200bwidth",
    "$100.00!!! ??? ...",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "<|im_start|><|im_end|>",
    "<|im_start",
    "<think>\nsome reasoning\n</think>\n\nThe answer.",
    "mask: <mask> here",
    "ſ 'ſ and 'S",
    "ÀÉÎÕÜ àéîõü",
    "The quick brown fox jumps over the lazy dog.",
]


def added_tokens(with_think=True):
    tokens = [
        AddedToken("<|endoftext|>", special=True, normalized=False),
        AddedToken("<|im_start|>", special=True, normalized=False),
        AddedToken("<|im_end|>", special=True, normalized=False),
        AddedToken("<mask>", special=True, normalized=False, lstrip=True, rstrip=True),
    ]
    if with_think:
        tokens += [AddedToken("<think>", special=False, normalized=False),
                   AddedToken("</think>", special=False, normalized=False)]
    return tokens


def byte_level(name, split, legacy_merges=False, ignore_merges=False, nfc=True, post=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = post or processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    tok.add_special_tokens(added_tokens()[:4])
    tok.add_tokens(added_tokens()[4:])
    data = json.loads(tok.to_str())
    if legacy_merges:
        data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    return name, data


def sentencepiece_style():
    # Llama-2's layout: no pre-tokenizer, "▁" for spaces through the normalizer, <0xNN> tokens in the vocabulary.
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False, limit_alphabet=70,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False),
                            AddedToken("<|im_end|>", special=True, normalized=False)])
    data = json.loads(tok.to_str())
    # The byte tokens are plain vocabulary entries in Llama-2, not added tokens.
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in byte_tokens]
    return "spbpe", data


def llama3_post():
    return processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B",
                                         special_tokens=[("<|endoftext|>", 0)])


def write_tokenizer(name, data, config):
    folder = os.path.join(ROOT, name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_file(path)
    long_text = CORPUS * 4
    cases = []
    for text in STRINGS + [long_text]:
        with_special = tok.encode(text, add_special_tokens=True).ids
        without = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": with_special,
            "ids_no_special": without,
            "decoded": tok.decode(with_special, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True),
        })
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab_size": tok.get_vocab_size(with_added_tokens=True), "cases": cases}, f,
                  ensure_ascii=False, indent=0)
    print(f"{name}: vocab {tok.get_vocab_size()} + added, {len(cases)} cases")


CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hello!"}],
    "system_user": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is 2 + 2?"}],
    "multi_turn": [{"role": "system", "content": "  Be brief.  "},
                   {"role": "user", "content": "Name a colour."},
                   {"role": "assistant", "content": "Blue."},
                   {"role": "user", "content": "Another one, in Français: « rouge » ? 😀"}],
    "reasoning_history": [{"role": "user", "content": "Think first: 3 * 7?"},
                          {"role": "assistant", "content": "<think>\nThree sevens.\n</think>\n\n21"},
                          {"role": "user", "content": "And 4 * 7?"},
                          {"role": "assistant", "content": "<think>\nFour sevens\n</think>\n28"}],
    "quotes_and_newlines": [{"role": "user", "content": "Line one\nLine \"two\" with 'quotes'\n\n"}],
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city, in °C.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}]

TEMPLATES = {
    "qwen3": {"bos_token": None, "eos_token": "<|im_end|>"},
    "qwen3.5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "qwen3-next": {"bos_token": None, "eos_token": "<|im_end|>"},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
}


def render_templates():
    cases = []
    for name, tokens in TEMPLATES.items():
        with open(os.path.join(ROOT, "templates", name + ".jinja"), encoding="utf-8") as f:
            template = f.read()
        variants = [(conv, True, {}, None) for conv in CONVERSATIONS]
        variants += [("multi_turn", False, {}, None), ("system_user", True, {"enable_thinking": False}, None),
                     ("system_user", True, {}, TOOLS)]
        for conv, generation_prompt, extra, tools in variants:
            kwargs = {k: v for k, v in tokens.items() if v is not None}
            kwargs.update(extra)
            rendered, _ = render_jinja_template(conversations=[CONVERSATIONS[conv]], chat_template=template,
                                                tools=tools, add_generation_prompt=generation_prompt, **kwargs)
            cases.append({"template": name, "conversation": conv, "add_generation_prompt": generation_prompt,
                          "variables": kwargs, "tools": tools, "expected": rendered[0]})
    with open(os.path.join(ROOT, "chat_templates.json"), "w", encoding="utf-8") as f:
        json.dump({"conversations": CONVERSATIONS, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"chat templates: {len(cases)} cases")


# Small templates probing one Jinja rule each, rendered by transformers' own compiled environment.
SNIPPETS = [
    ("{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("  {% if true %}\n  x\n  {% endif %}\n  {{ 'y' }}\n", {}),
    ("{# note #}\nA  {# inline #}  B\n  {#- strip -#}  C", {}),
    ("a {%+ if true %}b{% endif %} c\n{%- if true -%}\n  d  \n{%- endif %}", {}),
    ("{{ [1, 'two', 3.5, none, true, {'k': 'v'}] }}|{{ {'b': 1, 'a': [2]} }}|{{ 2.0 }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}", {}),
    ("{{ {'b': 1, 'a': [2, {'c': none}], 'q': \"it's\"} | tojson }}|{{ {'x': [1, 2]} | tojson(indent=2) }}", {}),
    ("{{ '  pad  ' | trim }}|{{ 'abc' | length }}|{{ ['a', 'b'] | join('-') }}|{{ x | default('dflt') }}", {}),
    ("{% for k, v in {'one': 1, 'two': 2} | items %}{{ loop.index }}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}", {}),
    ("{{ [1, 2, 3, 4] | reject('equalto', 2) | list }}|{{ [{'n': 'a'}, {'n': 'b'}] | map(attribute='n') | join }}", {}),
    ("{% for x in 'abcde' %}{{ loop.revindex }}{{ x }}{{ loop.previtem }}{% if x == 'c' %}{% break %}{% endif %}{% endfor %}", {}),
    ("{% for x in range(6) %}{% if x is odd %}{% continue %}{% endif %}{{ x }}{% else %}empty{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("{{ 'a b  c'.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'xxhixx'.strip('x') }}|{{ 'Hello'.startswith(('He', 'x')) }}|{{ 'abc'.upper() }}", {}),
    ("{{ 'hello'[1:3] }}|{{ 'hello'[-2:] }}|{{ [1, 2, 3, 4, 5][::2] }}|{{ [1, 2, 3][::-1] }}|{{ 'abc'[-1] }}|{{ [1, 2, 3][5:] }}", {}),
    ("{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 1 + 2.5 }}|{{ 'a' ~ 1 ~ none }}|{{ 'ab' * 3 }}", {}),
    ("{{ 'b' in 'abc' }}|{{ 3 not in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ not none }}|{{ none or 'x' }}|{{ 0 and 1 }}", {}),
    ("{{ x is defined }}|{{ x is undefined }}|{{ none is none }}|{{ 's' is string }}|{{ 3 is number }}|{{ [] is iterable }}|{{ {} is mapping }}|{{ 4 is divisibleby 2 }}", {}),
    ("{% macro greet(name, punct='!') -%}Hi {{ name }}{{ punct }}{%- endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}", {}),
    ("{% set ns = namespace(total=0, seen=[]) %}{% for i in [3, 4] %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}", {}),
    ("{% set y = 1 %}{% for i in [1, 2] %}{% set y = y + i %}{{ y }}{% endfor %}|{{ y }}", {}),
    ("{% set block %}inner {{ 1 + 1 }}{% endset %}[{{ block }}]|{{ 'yes' if flag else 'no' }}|{{ 'only' if false }}|", {"flag": True}),
    ("{{ messages[0]['content'] | trim }}|{{ messages | length }}|{{ messages[-1].role }}|{{ messages[1:] | length }}", {"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]}),
    ("{{ \"esc\\\"aped\\n\\t\" }}|{{ 'uni\\u00e9' }}|{{ 'caf\u00e9' | upper }}", {}),
]


def render_snippets():
    cases = []
    for template, context in SNIPPETS:
        rendered = _compile_jinja_template(template).render(**context)
        cases.append({"template": template, "context": context, "expected": rendered})
    with open(os.path.join(ROOT, "jinja_snippets.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"jinja snippets: {len(cases)} cases")


def main():
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "templates", "qwen3.jinja"), encoding="utf-8") as f:
        qwen_config = {"bos_token": None, "eos_token": "<|im_end|>", "chat_template": f.read()}
    name, data = byte_level("qwen2", QWEN2_REGEX)
    write_tokenizer(name, data, qwen_config)
    name, data = byte_level("gpt2", None, legacy_merges=True, nfc=False)
    write_tokenizer(name, data, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    name, data = byte_level("llama3", LLAMA3_REGEX, ignore_merges=True, nfc=False, post=llama3_post())
    write_tokenizer(name, data, {"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>"}})
    name, data = sentencepiece_style()
    write_tokenizer(name, data, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    render_templates()
    render_snippets()


if __name__ == "__main__":
    main()
