// Polls the status of the exports still being prepared and shows the download link when ready.
(function () {
  "use strict";
  var label = document.getElementById("export-download-label");
  function watch(row) {
    var url = row.getAttribute("data-status-url");
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          row.querySelector("progress").value = data.progress;
          row.querySelector(".export-status").textContent = data.status_display;
          row.setAttribute("data-export-status", data.status);
          if (data.status === "done" && data.download_url) {
            var link = document.createElement("a");
            link.href = data.download_url;
            link.textContent = label ? label.textContent : "Download";
            var cell = row.querySelector(".export-link");
            cell.textContent = "";
            cell.appendChild(link);
          } else if (data.status === "queued" || data.status === "running") {
            window.setTimeout(poll, 1000);
          }
        });
    }
    poll();
  }
  document.querySelectorAll("tr[data-export-id]").forEach(function (row) {
    var status = row.getAttribute("data-export-status");
    if (status === "queued" || status === "running") { watch(row); }
  });
})();
