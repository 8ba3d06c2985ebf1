// The job page's live preview: each `preview` event of the job's stream (a small JPEG of its first, middle
// and last frame, projected from the latents without the VAE) replaces the last; gone once the video is there.
export function showPreview(event) {
  const img = document.getElementById("live-preview");
  img.src = `data:${event.content_type};base64,${event.image}`;
  img.dataset.step = String(event.step);
  document.getElementById("preview-step").textContent =
    `step ${event.step} of ${event.total} · three frames from the latents, before the VAE decodes them`;
  document.getElementById("live").hidden = false;
}

export function endPreview() {
  document.getElementById("live").hidden = true;
}
