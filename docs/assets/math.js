// The notebooks' equations, rendered by MathJax 3 from the site's own assets: no other host is
// asked for anything. tools/build_site.py copies MathJax (pinned in package.json, installed by
// `npm ci`) to assets/mathjax/ and points each notebook page's math script at this file.
window.MathJax = {
  tex: {
    inlineMath: [["$", "$"], ["\\(", "\\)"]],
    displayMath: [["$$", "$$"], ["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams"
  },
  svg: { fontCache: "global" },   // SVG output: no web fonts to load
  options: { enableMenu: false }  // the context menu would load more components on demand
};
(function () {
  var script = document.createElement("script");
  script.src = new URL("mathjax/tex-svg-full.js", document.currentScript.src).href;
  script.async = true;
  document.head.appendChild(script);
})();
