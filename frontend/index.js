// Entry point. TensorBoard's plugin iframe runs `import("./index.js").then(m => m.render())`
// in a page whose <base href> is this plugin's route prefix; the other modules and the
// stylesheet are served under ./static/.

import { GalleryApp } from "./static/app.js";
import { followHostTheme } from "./static/theme.js";

function loadStylesheet(href) {
  return new Promise((resolve) => {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);
    setTimeout(resolve, 2000);
    (document.head || document.documentElement).appendChild(link);
  });
}

/** Builds the gallery into document.body. */
export async function render() {
  followHostTheme();
  await loadStylesheet("./static/gallery.css");
  const root = document.createElement("div");
  root.id = "batch-images";
  document.body.appendChild(root);
  const app = new GalleryApp(root);
  try {
    // TensorBoard calls reload() on a plugin's element when it reloads data (its ⟳
    // button and auto-reload); for iframe plugins that element is our frame.
    if (window.frameElement) window.frameElement.reload = () => app.reload();
  } catch {
    // not framed by a same-origin TensorBoard
  }
  await app.start();
  return app;
}
