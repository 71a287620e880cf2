/* The socketsvc dashboard refreshes its figures in place every few seconds (without this
   script, the page reloads itself every 30 seconds). */
"use strict";
(function () {
    const frame = document.getElementById("socketsvc-dashboard");
    if (!frame) {
        return;
    }
    const url = frame.dataset.socketsvcFigures;
    const every = Math.max(1, Number(frame.dataset.refresh || "5")) * 1000;

    async function refresh() {
        try {
            const response = await fetch(url, {credentials: "same-origin"});
            if (response.ok) {
                frame.innerHTML = await response.text();
                frame.dataset.refreshed = String(Date.now());
            }
        } catch (error) {
            /* the server is away for a moment: try again next time */
        }
        window.setTimeout(refresh, every);
    }
    window.setTimeout(refresh, every);
}());
