"""The Export tab in a real browser: a run that finished after the page was built is put up as the
Model when the tab opens (a person's own pick is kept); the finished run exported as GGUF (files and the Ollama command
shown), merged into a model folder, then picked in the Chat tab and chatted with; a merge method's
own settings appear when it is chosen; a refused merge says why and starts nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from studio import export_service
from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)
from tests.test_browser_data import choose

pytestmark = pytest.mark.browser


def modelfile_bytes(studio, export_id) -> bytes:
    return (studio.run_dir(export_id) / "gguf" / "Modelfile").read_bytes()


def test_export_a_run_then_chat_with_the_merged_model(server, page, studio, tiny_model_dir, tiny_params):  # noqa: F811
    from playwright.sync_api import expect

    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**tiny_params, "num_train_epochs": 0.2})
    assert studio.wait(run_id, poll_s=0.5)["status"] == "completed"
    page.goto(server)
    page.get_by_role("tab", name="Export").click()
    run_label = f"Run {run_id}: LoRA on Quillpad support FAQ"
    # the page was built before the run finished: opening the tab puts the new run up
    expect(page.locator("#export-source input")).to_have_value(run_label, timeout=30_000)
    # a person's own pick stays when the tab is opened again
    choose(page, "export-source", "Built-in SmolLM2-135M-Instruct")
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("tab", name="Export").click()
    page.wait_for_timeout(1500)
    expect(page.locator("#export-source input")).to_have_value("Built-in SmolLM2-135M-Instruct")
    choose(page, "export-source", run_label)

    # GGUF (the default format): the file, its Modelfile and the command to run it
    fill(page, "export-name", "FAQ helper")  # named for files and Ollama: said, not done silently
    page.click("#export-start")
    expect(page.locator("#export-message")).to_contain_text("Started the export", timeout=30_000)
    expect(page.locator("#export-message")).to_contain_text("It is named faq-helper: a name for files and for "
                                                            "Ollama takes letters, digits")
    gguf_id = studio.store.list_exports()[0]["id"]
    expect(page.locator("#export-details")).to_contain_text("completed", timeout=120_000)
    expect(page.locator("#export-details")).to_contain_text("faq-helper-q8_0.gguf")
    expect(page.locator("#export-details")).to_contain_text("ollama create faq-helper -f Modelfile")
    # the files download straight from the workspace (handed to a Gradio File, each pick of the export read
    # the whole GGUF for a hash and copied it into Gradio's cache first)
    gguf_file = studio.run_dir(gguf_id) / "gguf" / "faq-helper-q8_0.gguf"
    for name, on_disk in (("faq-helper-q8_0.gguf", gguf_file), ("Modelfile", gguf_file.parent / "Modelfile")):
        with page.expect_download() as fetched:
            page.locator("#export-details a", has_text=name).click()
        assert fetched.value.suggested_filename == name
        assert Path(fetched.value.path()).read_bytes() == on_disk.read_bytes()
    with httpx.Client(base_url=server, timeout=30) as client:
        tail = client.get(f"/studio-download/{gguf_id}?file=faq-helper-q8_0.gguf", headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == gguf_file.read_bytes()[-100:]  # a cut download resumes
        head = client.head(f"/studio-download/{gguf_id}?file=Modelfile")
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(modelfile_bytes(studio, gguf_id))
        for other in (f"/studio-download/{gguf_id}?file=..%2F..%2Fstudio.db", f"/studio-download/{gguf_id}?file=job.json",
                      f"/studio-download/{gguf_id}?file=Modelfile&file=job.json", f"/studio-download/{gguf_id}",
                      f"/studio-download/{run_id}?file=adapter_config.json", "/studio-download/x1?file=Modelfile"):
            assert client.get(other).status_code == 404, other
    expect(page.locator("#export-cancel")).to_be_disabled()  # nothing left to cancel
    expect(page.locator("#export-table")).to_contain_text(gguf_id)

    # a merged model folder, which the rest of the studio then offers as a model
    page.locator("#export-format").get_by_text("Merged model folder").click()
    expect(page.locator("#export-quant")).to_be_hidden()
    # no Ollama model's name: the name the studio's model lists show
    expect(page.locator("#export-name textarea, #export-name input").first).to_have_attribute(
        "placeholder", "e.g. quillpad-support (how the Train and Chat lists name it)")
    fill(page, "export-name", "faq-helper")  # another model's export has that name: its Ollama model would go
    page.click("#export-start")
    expect(page.locator("#export-message")).to_contain_text("an export named 'faq-helper' exists already",
                                                            timeout=30_000)
    assert len(studio.store.list_exports()) == 1
    fill(page, "export-name", "FAQ-Merged")
    page.click("#export-start")
    expect(page.locator("#export-details")).to_contain_text("faq-merged", timeout=30_000)
    # lowercased, and told so (not told of the letters a name may hold, which it had kept to)
    expect(page.locator("#export-message")).to_contain_text("It is named faq-merged: names are written in lowercase.")
    # (the details name the run it exports, 'completed' too, before the export itself is done)
    expect(page.locator("#export-details")).to_contain_text("model.safetensors", timeout=120_000)
    expect(page.locator("#export-details")).to_contain_text("completed")
    # how to load it outside the studio, and in what precision its weights are
    expect(page.locator("#export-details")).to_contain_text("AutoModelForCausalLM.from_pretrained(")
    expect(page.locator("#export-details")).to_contain_text("weights in float32, as its base model stores them")
    merged_id = next(r["id"] for r in studio.store.list_exports() if r["kind"] == "merged")
    # a part of a text file, to a client that takes compressed answers: the bytes as they are on disk
    tokenizer = (studio.run_dir(merged_id) / "model" / "tokenizer.json").read_bytes()
    part = httpx.get(f"{server}/studio-download/{merged_id}?file=tokenizer.json", timeout=30,
                     headers={"Range": "bytes=0-99", "Accept-Encoding": "br, gzip"})
    assert part.status_code == 206 and "content-encoding" not in part.headers and part.content == tokenizer[:100]

    page.get_by_role("tab", name="Chat").click()
    choose(page, "chat-model-b", f"Exported model: faq-merged (merged with its base, {merged_id})")
    fill(page, "chat-model-a", f"base:{tiny_model_dir}")
    fill(page, "chat-prompt", "How long is the warranty?")
    page.click("#chat-send")
    expect(page.locator("#chat-b")).to_contain_text("How long is the warranty?", timeout=30_000)
    # the side B model the chat loaded is the export's folder
    folder = str(studio.run_dir(merged_id) / "model")
    for _ in range(60):
        if folder in studio.chat_models.loaded():
            break
        page.wait_for_timeout(500)
    assert folder in studio.chat_models.loaded()


def test_merge_settings_follow_the_method_and_a_refusal_starts_nothing(server, page, studio):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server)
    page.get_by_role("tab", name="Export").click()
    expect(page.locator("#merge-t")).to_be_visible(timeout=30_000)  # SLERP first: its t
    expect(page.locator("#merge-base")).to_be_hidden()
    choose(page, "merge-method", "TIES")
    expect(page.locator("#merge-help")).to_contain_text("largest changes")
    expect(page.locator("#merge-base")).to_be_visible()
    expect(page.locator("#merge-density")).to_be_visible()
    expect(page.locator("#merge-t")).to_be_hidden()
    choose(page, "merge-method", "SLERP (two models)")
    page.click("#merge-start")  # no models picked
    expect(page.locator("#export-message")).to_contain_text(
        "Cannot merge: SLERP blends exactly two models; 0 were given", timeout=30_000)
    assert export_service.list_exports(studio) == []
