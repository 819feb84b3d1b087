// The run log shows its newest lines: when its text changes it is scrolled to the end, unless the
// person has scrolled up to read. (Gradio's own autoscroll left the box at its first line once a
// finished run's log was redrawn: "run completed" sat out of sight below.)
(() => {
  let seen = null, reading = false;
  setInterval(() => {
    const box = document.querySelector("#run-log textarea");
    if (!box) return;
    if (!box.dataset.follows) {  // a new box (the page drew it again): follow it from its end
      box.dataset.follows = "1";
      seen = null;
      reading = false;
      box.addEventListener("scroll", () => {
        reading = box.scrollTop + box.clientHeight < box.scrollHeight - 8;
      });
    }
    if (box.value !== seen) {
      seen = box.value;
      if (!reading) box.scrollTop = box.scrollHeight;
    }
  }, 500);
})();
