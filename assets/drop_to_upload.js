// A file dropped anywhere on the Data tab goes to its upload box, as if dropped there. The tables
// beside the box took a dropped CSV and did nothing with it, and a drop on the rest of the page
// opened the file in the studio's place.
(() => {
  const onDataTab = () => {
    const button = document.querySelector("#studio-tabs [role=tab][aria-selected=true]");
    return !!button && button.dataset.tabId === "data";
  };
  const carriesFiles = (event) => !!event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  const ours = (event) => carriesFiles(event) && onDataTab() && !event.target.closest("#data-upload");
  const input = () => document.querySelector("#data-upload input[type=file]");

  document.addEventListener("dragover", (event) => {
    if (!ours(event)) return;
    event.preventDefault();
    event.stopPropagation();
    event.dataTransfer.dropEffect = "copy";
  }, true);

  document.addEventListener("drop", (event) => {
    if (!ours(event) || !event.dataTransfer.files.length) return;
    event.preventDefault();
    event.stopPropagation();
    const file = event.dataTransfer.files[0];
    // a file already in the box: clear it first (its input comes back once the box is empty)
    const clear = document.querySelector("#data-upload button[aria-label=Clear]");
    if (clear && !input()) clear.click();
    let tries = 0;
    const give = () => {
      const box = input();
      if (!box) {
        if (++tries < 40) setTimeout(give, 50);
        return;
      }
      const picked = new DataTransfer();
      picked.items.add(file);
      box.files = picked.files;
      box.dispatchEvent(new Event("change", { bubbles: true }));
    };
    give();
  }, true);
})();
