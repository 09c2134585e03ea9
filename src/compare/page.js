// Filters the pairs by class: the checked classes go into the URL
// fragment (#class=different,missing), so a filtered page can be linked.
(function () {
  var boxes = [].slice.call(document.querySelectorAll("#filters input"));
  var pairs = [].slice.call(document.querySelectorAll("article[data-pair]"));
  function apply() {
    var m = /(?:^|[#&])class=([^&]*)/.exec(location.hash);
    var want = m ? decodeURIComponent(m[1]).split(",") : null;
    boxes.forEach(function (b) { b.checked = !want || want.indexOf(b.value) >= 0; });
    var shown = 0;
    pairs.forEach(function (p) {
      var on = !want || want.indexOf(p.getAttribute("data-class")) >= 0;
      p.hidden = !on;
      if (on) shown++;
    });
    document.getElementById("shown").textContent = shown + " of " + pairs.length + " shown";
  }
  boxes.forEach(function (b) {
    b.addEventListener("change", function () {
      location.hash = "class=" + boxes.filter(function (x) { return x.checked; })
        .map(function (x) { return x.value; }).join(",");
    });
  });
  window.addEventListener("hashchange", apply);
  apply();
  document.body.setAttribute("data-ready", "1");
})();
