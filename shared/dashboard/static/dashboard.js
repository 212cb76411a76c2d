// A running job's page: refresh its progress bar, state and stage from progress.json, without reloading the page.
// Everything is written as text (textContent), never as HTML.
(function () {
  "use strict";
  const data = document.getElementById("job-data");
  if (!data) return;
  const job = JSON.parse(data.textContent);
  if (job.final) return;
  const bar = document.getElementById("progress");
  const count = document.getElementById("progress-text");
  const state = document.getElementById("state");
  const stage = document.getElementById("stage");
  const ended = document.getElementById("ended");

  function show(progress) {
    bar.max = Math.max(progress.total, 1);
    bar.value = progress.done;
    const percent = progress.total ? " (" + Math.round(100 * progress.done / progress.total) + "%)" : "";
    count.textContent = progress.done.toLocaleString("en-US") + " of " + progress.total.toLocaleString("en-US") +
      " rows labelled" + percent;
    state.textContent = progress.state + (progress.interrupted ? " (interrupted)" : "");
    state.className = "state state-" + progress.state.replace(/ /g, "-") + (progress.interrupted ? " interrupted" : "");
    stage.textContent = progress.stage;
    if (progress.final) ended.hidden = false;
  }

  async function poll() {
    try {
      const response = await fetch(job.progress, {cache: "no-store", credentials: "same-origin"});
      if (response.ok) {
        const progress = await response.json();
        show(progress);
        if (progress.final) return;
      }
    } catch (error) {
      // the server is unreachable for now: try again at the next interval
    }
    setTimeout(poll, job.interval_ms);
  }

  setTimeout(poll, job.interval_ms);
})();
