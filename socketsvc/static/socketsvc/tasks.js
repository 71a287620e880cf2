/* Keep task progress bars, statuses and times current without reloading the page.
 *
 * Every element [data-socketsvc-task] with data-active="1" is polled once a
 * second at its data-socketsvc-live URL; the row (or page) around it gets the
 * new values. Polling stops once no task on the page is active.
 */
(function () {
    "use strict";
    var INTERVAL_MS = 1000;

    function activeBars() {
        return Array.prototype.slice.call(
            document.querySelectorAll('[data-socketsvc-task][data-active="1"]')
        );
    }

    function container(bar) {
        return bar.closest("tr") || bar.closest("form") || document;
    }

    function setField(scope, name, text) {
        scope.querySelectorAll('[data-socketsvc-field="' + name + '"]').forEach(function (el) {
            el.textContent = text;
        });
    }

    function apply(bar, state) {
        var scope = container(bar);
        var fill = bar.querySelector(".socketsvc-progress-fill");
        if (fill && state.percent !== null) {
            fill.style.width = state.percent + "%";
        }
        setField(scope, "progress", state.progress);
        setField(scope, "started_at", state.started_at);
        setField(scope, "finished_at", state.finished_at);
        setField(scope, "duration", state.duration);
        setField(scope, "attempts", String(state.attempts));
        scope.querySelectorAll('[data-socketsvc-field="status"]').forEach(function (el) {
            el.textContent = state.status_label;
            el.className = "socketsvc-status socketsvc-status-" + state.status.toLowerCase();
        });
        bar.setAttribute("data-active", state.active ? "1" : "0");
    }

    function poll() {
        var bars = activeBars();
        if (!bars.length) {
            return;
        }
        var url = bars[0].getAttribute("data-socketsvc-live");
        var query = bars.map(function (bar) {
            return "id=" + encodeURIComponent(bar.getAttribute("data-socketsvc-task"));
        }).join("&");
        fetch(url + "?" + query, {credentials: "same-origin", headers: {"Accept": "application/json"}})
            .then(function (response) { return response.ok ? response.json() : {}; })
            .then(function (states) {
                bars.forEach(function (bar) {
                    var state = states[bar.getAttribute("data-socketsvc-task")];
                    if (state) {
                        apply(bar, state);
                    }
                });
            })
            .catch(function () { /* try again on the next tick */ })
            .then(function () { window.setTimeout(poll, INTERVAL_MS); });
    }

    document.addEventListener("DOMContentLoaded", function () {
        if (activeBars().length) {
            window.setTimeout(poll, INTERVAL_MS);
        }
    });
}());
