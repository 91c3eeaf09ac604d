// symgrad explore: step through backprop gate by gate (compiler/viz/explore.py writes the data).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("sg-data").textContent);
  var rows = data.rows;
  var slider = document.getElementById("sg-slider");
  var position = document.getElementById("sg-position");
  var hoverBox = document.getElementById("sg-hover");
  var sections = Array.prototype.slice.call(document.querySelectorAll(".sg-panel"));
  var at = 0;

  // Each panel's drawn nodes by their DOT name (the <title> Graphviz writes in each node).
  var drawn = sections.map(function (section, p) {
    var byName = {};
    var panel = data.panels[p];
    section.querySelectorAll("g.node").forEach(function (g) {
      var title = g.querySelector("title");
      if (!title) return;
      var name = title.textContent;
      byName[name] = g;
      var info = panel.nodes[name];
      if (!info) return;
      g.setAttribute("tabindex", "0");
      g.setAttribute("focusable", "true");
      g.setAttribute("aria-label", info.formula);
      var show = function () { showInfo(panel.name, info); };
      g.addEventListener("mouseenter", show);
      g.addEventListener("focus", show);
    });
    return byName;
  });

  function showInfo(side, info) {
    hoverBox.textContent = "";
    var lines = [
      ["", side + ": " + info.formula],
      ["local gradient", info.rule],
      ["value", info.value],
      ["gradient ∂f/∂" + info.name, info.grad]
    ];
    lines.forEach(function (line) {
      var div = document.createElement("div");
      if (line[0]) {
        var b = document.createElement("b");
        b.textContent = line[0] + ": ";
        div.appendChild(b);
      }
      div.appendChild(document.createTextNode(line[1]));
      hoverBox.appendChild(div);
    });
    hoverBox.classList.add("sg-shown");
  }

  function render() {
    slider.value = String(at);
    position.textContent = at === 0 ? "start" : "row " + at + " of " + rows.length;
    sections.forEach(function (section, p) {
      var panel = data.panels[p];
      var caption = section.querySelector(".sg-caption");
      var count = section.querySelector(".sg-count");
      var note = section.querySelector(".sg-align");
      Object.keys(drawn[p]).forEach(function (name) {
        drawn[p][name].classList.remove("sg-current");
      });
      var j = at === 0 ? null : rows[at - 1][p];
      if (j === null || j === undefined) {
        section.removeAttribute("data-current");
        section.removeAttribute("data-phase");
        caption.textContent = at === 0 ? data.start[p] : "";
        count.textContent = "";
        note.textContent = "";
        return;
      }
      var step = panel.steps[j];
      section.setAttribute("data-current", step.node);
      section.setAttribute("data-phase", step.phase);
      section.setAttribute("data-step", String(j));
      caption.textContent = step.caption;
      count.textContent = step.count;
      note.textContent = panel.align[at - 1] || "";
      var g = drawn[p][step.node];
      if (g) g.classList.add("sg-current");
    });
    if (window.frameElement) fitFrame();
  }

  // In a notebook's iframe: as tall as the page's content. The content's own bottom, not the
  // document's scrollHeight, which is never less than the frame: that grew the frame each render.
  function fitFrame() {
    var body = document.body;
    var bottom = body.getBoundingClientRect().bottom + window.scrollY +
      parseFloat(getComputedStyle(body).marginBottom || "0");
    var height = Math.ceil(bottom) + 8 + "px";
    try {
      if (window.frameElement.style.height !== height) window.frameElement.style.height = height;
    } catch (e) { /* another origin: keep the height it was given */ }
  }

  function go(to) {
    at = Math.max(0, Math.min(rows.length, to));
    render();
  }

  document.getElementById("sg-next").addEventListener("click", function () { go(at + 1); });
  document.getElementById("sg-prev").addEventListener("click", function () { go(at - 1); });
  slider.addEventListener("input", function () { go(parseInt(slider.value, 10)); });
  document.addEventListener("keydown", function (event) {
    if (event.target === slider) return;  // the slider moves itself with the arrow keys
    if (event.key === "ArrowRight") { go(at + 1); event.preventDefault(); }
    if (event.key === "ArrowLeft") { go(at - 1); event.preventDefault(); }
  });
  window.addEventListener("resize", render);
  render();
})();
