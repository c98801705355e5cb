// Draws the dashboard's charts from the data the page carries (json_script), with Chart.js served
// from the exchange's own static files.
(function () {
  "use strict";
  const source = document.getElementById("dashboard-chart-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  const palette = ["#417690", "#e08b28", "#5b9c48", "#b8496a", "#7a5ab5", "#3a9c9c"];

  function draw(canvasId, measure, title) {
    const canvas = document.getElementById(canvasId);
    if (!canvas) {
      return;
    }
    const datasets = data[measure].map(function (series, index) {
      return {
        label: series.market + " (" + series.quote + ")",
        data: series.values.map(Number),
        backgroundColor: palette[index % palette.length],
        borderColor: palette[index % palette.length],
      };
    });
    new Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { title: { display: true, text: title }, legend: { position: "bottom" } },
        scales: { x: { stacked: false, ticks: { maxRotation: 60, autoSkip: true } }, y: { beginAtZero: true } },
      },
    });
    canvas.dataset.drawn = "true";
  }

  draw("volume-chart", "volume", "Volume per day, in each market's quote asset");
  draw("fees-chart", "fees", "Fee revenue per day, in each market's quote asset");
})();
