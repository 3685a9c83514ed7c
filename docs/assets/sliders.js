// The website's sliders (tools/site_sliders.py writes their HTML): each range input picks one of
// the frames below it, all already in the page; a select, where there is one, picks the slider.
document.querySelectorAll(".nf-slider").forEach(function (figure) {
  var panels = Array.from(figure.querySelectorAll(".nf-panel"));
  panels.forEach(function (panel) {
    var inputs = Array.from(panel.querySelectorAll("input[type=range]"));
    var frames = Array.from(panel.querySelectorAll(".nf-frame"));
    function show() {
      var index = inputs.map(function (input) { return input.value; }).join(",");
      frames.forEach(function (frame) { frame.hidden = frame.dataset.index !== index; });
      inputs.forEach(function (input) {
        input.nextElementSibling.textContent = JSON.parse(input.dataset.values)[Number(input.value)];
      });
    }
    inputs.forEach(function (input) { input.addEventListener("input", show); });
    show();
  });
  var chooser = figure.querySelector(".nf-choice select");
  if (chooser) {
    chooser.addEventListener("change", function () {
      panels.forEach(function (panel) { panel.hidden = panel.dataset.key !== chooser.value; });
    });
  }
});
