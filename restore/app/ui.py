"""The Blocks layout: widgets on the left, before/after slider and facts on the right.

Only wiring lives here; what a request does is `AppService.run` (handlers.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from restore.app.handlers import AUTO, DEGRADATIONS, TASK_LABELS, AppService, Limits, degradation_spec, web_message
from restore.errors import RestoreError

log = logging.getLogger("restore.app")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

INTRO = """# restore · image restoration
Remove **noise**, **rain streaks** or **JPEG blocking** with compact networks found by neural
architecture search. Upload a photo or pick an example, choose what to fix and press **Restore**;
then drag the slider to compare before and after.
*Try it* degrades a clean photo first, so you can see how close the model gets to the original (PSNR/SSIM)."""

CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#intro p { color: var(--body-text-color-subdued); max-width: 60em; }
#facts table { margin-top: .4em; }
#model-info { padding: 0 12px 10px; background: var(--block-background-fill); font-size: var(--text-sm); }
footer { opacity: .6; }
"""


def raw_upload(image: gr.Image) -> gr.Image:
    """Make `image` hand the handler the uploaded file untouched.

    gr.Image would open the file with PIL first, so a broken upload would fail inside gradio
    with an opaque error; `restore.io.read_image` gives one clear line instead, and applies
    the pixel limit before decoding. Overridden on the instance, not in a subclass: gradio
    writes a .pyi stub beside any module that defines a component class.
    """
    image.preprocess = lambda payload: None if payload is None else payload.path
    return image


def _examples() -> tuple[list[list], list[str]]:
    rows = [
        ("monarch.png", "denoise", "Gaussian noise (σ)", 25, "Monarch + σ 25 noise (try it)"),
        ("monarch_noisy_s25.png", "denoise", "none", 25, "Noisy monarch"),
        ("birds_noisy_s25.png", "denoise", "none", 25, "Noisy birds (colour)"),
        ("rainy.png", "derain", "none", 25, "Rainy scene"),
        ("live1_q20.jpg", "deblock", "none", 25, "JPEG at quality 20"),
    ]
    present = [r for r in rows if (EXAMPLES / r[0]).is_file()]
    return [[str(EXAMPLES / f), t, k, s] for f, t, k, s, _ in present], [r[-1] for r in present]


def _error(exc: BaseException) -> gr.Error:
    """One human line for the page; the traceback only in the server log."""
    if isinstance(exc, RestoreError):
        return gr.Error(web_message(str(exc)), print_exception=False)
    if isinstance(exc, MemoryError):
        return gr.Error("out of memory: try a smaller image", print_exception=False)
    log.error("restoring failed", exc_info=exc)
    return gr.Error("restoring failed unexpectedly (details are in the server log)", print_exception=False)


def _slider_files(result) -> tuple[str, str]:
    """The before/after images as PNG files in this request's own folder.

    Given arrays, gradio encodes them and writes the bytes to a cache path named by their
    hash, non-atomically, on every request: two requests with identical images (two users
    restoring the same example) rewrite one file while it is being served, and a client
    gets a truncated download (seen under 20 concurrent requests, tests/test_app_load.py).
    Files go through gradio's copy-to-cache instead, which renames atomically."""
    from PIL import Image

    paths = []
    for name, pixels in (("before", result.before), ("after", result.after)):
        path = result.download.parent / f"{name}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(str(path))
    return paths[0], paths[1]


def build_demo(service: AppService) -> gr.Blocks:
    limits = service.limits
    tasks = [(label, task) for task, label in TASK_LABELS.items()]

    def restore(image, task, model, auto_sigma, sigma, try_kind, try_sigma, try_quality, ensemble,
                progress=gr.Progress()):
        try:
            result = service.run(image, task=task, model=model, sigma=None if auto_sigma else float(sigma),
                                 degradation=degradation_spec(try_kind, try_sigma, try_quality), ensemble=bool(ensemble),
                                 progress=lambda fraction, message: progress(fraction, desc=message))
        except Exception as exc:  # the server must survive any input
            raise _error(exc) from None
        for note in result.notes:
            gr.Warning(note)
        return _slider_files(result), result.summary, str(result.download)

    def on_task(task):
        # the model info is refreshed here too: the dropdown's value may stay "auto", so its
        # own change event would not fire
        return (gr.Dropdown(choices=service.model_choices(task), value=AUTO), service.describe(task, AUTO),
                gr.Accordion(visible=task == "denoise"))  # the other tasks' models take no σ

    def on_try_kind(kind):
        base = DEGRADATIONS.get(kind)
        # an example can switch try-it on: open the section so the user sees why the input got noisy
        return gr.Slider(visible=base == "awgn"), gr.Slider(visible=base == "jpeg"), gr.Accordion(open=True) if base else gr.Accordion()

    with gr.Blocks(title="restore · image restoration", analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                image = raw_upload(gr.Image(label="Your image", type="filepath", image_mode=None,
                                            sources=["upload", "clipboard"], height=260, elem_id="input-image"))
                # examples sit under the upload but also set controls rendered further down
                task = gr.Radio(tasks, value="denoise", label="What to fix", render=False)
                try_kind = gr.Radio(list(DEGRADATIONS), value="none", label="Add", elem_id="try-kind", render=False)
                try_sigma = gr.Slider(1, 75, value=25, step=1, label="noise σ", visible=False, render=False)
                rows, labels = _examples()
                gr.Examples(rows, inputs=[image, task, try_kind, try_sigma], example_labels=labels, label="Or pick an example")
                task.render()
                with gr.Group():
                    # any task's model name passes the component (an API call sets task and model
                    # together, before the list follows the task); the handler checks the pair
                    model = gr.Dropdown(service.model_choices("denoise"), value=AUTO, label="Model",
                                        info="auto = the task's default for your image (gray or colour)",
                                        allow_custom_value=True)
                    model_info = gr.Markdown(service.describe("denoise", AUTO), elem_id="model-info")
                    ensemble = gr.Checkbox(False, label="Extra quality: average flips/rotations (8× slower; rain: 4×, camera noise: 2×)",
                                           elem_id="ensemble")
                run = gr.Button("Restore", variant="primary", size="lg", elem_id="run-button")
                with gr.Accordion("Noise level", open=False) as noise_box:
                    auto_sigma = gr.Checkbox(True, label="Estimate automatically")
                    sigma = gr.Slider(0, 75, value=25, step=1, label="σ given to the model (0–255 scale)", interactive=False)
                with gr.Accordion("Try it: degrade a clean photo first", open=False, elem_id="try-it") as try_box:
                    try_kind.render()
                    try_sigma.render()
                    try_quality = gr.Slider(5, 95, value=20, step=1, label="JPEG quality", visible=False)
            with gr.Column(scale=3, min_width=400):
                slider = gr.ImageSlider(label="before ⟷ after", type="numpy", format="png", interactive=False,
                                        max_height=560, elem_id="result")
                facts = gr.Markdown("Results appear here: drag the slider to compare before and after.", elem_id="facts", label="facts")
                download = gr.DownloadButton("Download full-resolution PNG", interactive=False, elem_id="download")
        gr.Markdown(f"<small>Limits: {limits.max_upload_bytes / 2**20:.0f} MB per upload, "
                    f"{limits.max_pixels / 1e6:g} megapixels; requests wait in a queue. Backend: {service.backend}.</small>")

        # widget updates skip the queue: they stay instant while restorations wait their turn
        ui = dict(api_visibility="private", queue=False)
        task.change(on_task, task, [model, model_info, noise_box], **ui)
        model.change(service.describe, [task, model], model_info, **ui)
        auto_sigma.change(lambda auto: gr.Slider(interactive=not auto), auto_sigma, sigma, **ui)
        try_kind.change(on_try_kind, try_kind, [try_sigma, try_quality, try_box], **ui)
        run.click(restore, [image, task, model, auto_sigma, sigma, try_kind, try_sigma, try_quality, ensemble],
                  [slider, facts, download], api_name="restore"
                  ).success(lambda: gr.DownloadButton(interactive=True), None, download, **ui)
    return demo


def serve(demo: gr.Blocks, limits: Limits, *, host: str, port: int | None, share: bool, concurrency: int,
          queue_size: int, prevent_thread_lock: bool, quiet: bool) -> str:
    """Queue with bounded concurrency (CPU inference: 1–2 at a time), then launch."""
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    theme = gr.themes.Soft(primary_hue="teal", neutral_hue="slate",
                           font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web-font download
                           font_mono=["ui-monospace", "monospace"])
    # an OSError (port taken, bad host) is turned into one line by `launch`
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, max_file_size=limits.max_upload_bytes,
                            prevent_thread_lock=prevent_thread_lock, quiet=quiet, show_error=False, ssr_mode=False,
                            theme=theme, css=CSS)
    return url
