/* Keep a workflow's graph current without reloading the page.
 *
 * While the workflow may still change (data-active="1"), its live URL is asked
 * once a second; each step's box (g[data-step]) gets its state's class, its
 * progress bar and label, and the summary its status and count. Polling stops
 * once nothing can change.
 */
(function () {
    "use strict";
    var INTERVAL_MS = 1000;

    function setText(root, name, text) {
        root.querySelectorAll('[data-socketsvc-field="' + name + '"]').forEach(function (el) {
            el.textContent = text;
        });
    }

    function applyStep(root, id, step) {
        root.querySelectorAll('g[data-step="' + id + '"]').forEach(function (node) {
            var handler = node.classList.contains("socketsvc-node-handler");
            node.setAttribute("class", "socketsvc-node socketsvc-node-" + step.state +
                (handler ? " socketsvc-node-handler" : ""));
            var fill = node.querySelector(".socketsvc-node-fill");
            if (fill) {
                var full = parseFloat(fill.getAttribute("data-width"));
                fill.setAttribute("width", String(Math.round(full * (step.percent || 0) / 100)));
            }
            var label = node.querySelector('[data-part="label"]');
            if (label) {
                label.textContent = step.label;
            }
            var title = node.querySelector("title");
            if (title) {
                title.textContent = title.textContent.replace(/: [^:]*$/, ": " + step.state);
            }
        });
        root.querySelectorAll('[data-step-label="' + id + '"]').forEach(function (el) {
            el.textContent = step.label;
            el.className = "socketsvc-step-state socketsvc-node-" + step.state;
        });
    }

    function apply(root, state) {
        root.querySelectorAll('[data-socketsvc-field="workflow-status"]').forEach(function (el) {
            el.textContent = state.status_label;
            el.className = "socketsvc-status socketsvc-status-" + state.status.toLowerCase();
        });
        setText(root, "workflow-done", String(state.done));
        setText(root, "workflow-finished", state.finished_at);
        Object.keys(state.steps).forEach(function (id) {
            applyStep(root, id, state.steps[id]);
        });
        if (!state.active) {
            root.setAttribute("data-active", "0");
            root.querySelectorAll("[data-socketsvc-cancel-workflow]").forEach(function (el) {
                el.closest("ul").remove();
            });
        }
    }

    function poll(root) {
        if (root.getAttribute("data-active") !== "1") {
            return;
        }
        fetch(root.getAttribute("data-socketsvc-workflow-live"), {
            credentials: "same-origin",
            headers: {"Accept": "application/json"}
        })
            .then(function (response) { return response.ok ? response.json() : null; })
            .then(function (state) {
                if (state) {
                    apply(root, state);
                }
            })
            .catch(function () { /* try again on the next tick */ })
            .then(function () { window.setTimeout(function () { poll(root); }, INTERVAL_MS); });
    }

    document.addEventListener("DOMContentLoaded", function () {
        var root = document.querySelector("[data-socketsvc-workflow-live]");
        if (root) {
            window.setTimeout(function () { poll(root); }, INTERVAL_MS);
        }
    });
}());
