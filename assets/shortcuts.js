// Label tab keyboard shortcuts: 1 left, 2 right, 3 tie, 4 both bad, S skip, U (or Ctrl+Z) undo.
// Only while the labeling view is on screen and the cursor is not in a text field.
(() => {
  const keys = {"1": "label-left", "2": "label-right", "3": "label-tie", "4": "label-both-bad",
                "s": "label-skip", "u": "label-undo"};
  document.addEventListener("keydown", (event) => {
    const field = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
    // a held key repeats: it would label the next item before anyone has read it
    if (field || event.repeat || event.altKey || event.metaKey) return;
    let key = event.key.toLowerCase();
    if (event.ctrlKey) {
      if (key !== "z") return;
      key = "u";
    }
    const id = keys[key];
    const button = id && document.getElementById(id);
    if (!button || button.offsetParent === null || button.disabled) return;  // hidden tab or no item
    event.preventDefault();
    button.click();
  });
})();
