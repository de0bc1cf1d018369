"""The script the workbench serves beside Netron's page; kept in Python so that it ships with the package."""

PAGE_SCRIPT = r"""// Served by the workbench beside Netron's page (see netron_server.py): runs before Netron's own scripts.
(function () {
    'use strict';
    // Netron's consent check reads document.cookie. An iframe on another port may be denied cookies,
    // so the page gets an in-memory jar that already holds the answer; telemetry is off anyway.
    var jar = { consent: String(Date.now()) };
    Object.defineProperty(document, 'cookie', {
        configurable: true,
        get: function () {
            return Object.keys(jar).map(function (key) { return key + '=' + jar[key]; }).join('; ');
        },
        set: function (text) {
            var pair = String(text).split(';')[0];
            var at = pair.indexOf('=');
            var key = pair.substring(0, at).trim();
            var value = pair.substring(at + 1).trim();
            if (/max-age=0/i.test(String(text)) || value === '') {
                delete jar[key];
            } else {
                jar[key] = value;
            }
        }
    });

    // A click on a node tells the notebook page (another origin) which node it was: the workbench selects it.
    document.addEventListener('click', function (event) {
        var element = event.target && event.target.closest ? event.target.closest('[id^="node-name-"]') : null;
        if (element && window.parent !== window) {
            window.parent.postMessage({ type: 'workbench-node', node: element.id.substring('node-name-'.length) }, '*');
        }
    }, true);

    // The legend of the role colours (workbench.css), with a checkbox that turns them off.
    var addLegend = function () {
        var source = document.querySelector('meta[name="workbench-legend"]');
        var entries = source ? JSON.parse(source.getAttribute('content') || '[]') : [];
        if (!entries.length || document.getElementById('workbench-legend')) {
            return;
        }
        var legend = document.createElement('div');
        legend.id = 'workbench-legend';
        legend.style.cssText = 'position:fixed;top:8px;right:8px;z-index:10;background:rgba(255,255,255,0.92);' +
            'color:#1f2328;border:1px solid #d0d7de;border-radius:4px;padding:4px 8px;font:12px sans-serif';
        var toggle = document.createElement('label');
        toggle.style.cssText = 'display:block;margin-bottom:2px;cursor:pointer';
        var box = document.createElement('input');
        box.type = 'checkbox';
        box.checked = true;
        box.id = 'workbench-colours';
        box.addEventListener('change', function () { document.body.classList.toggle('wb-plain', !box.checked); });
        toggle.appendChild(box);
        toggle.appendChild(document.createTextNode(' colour by error'));
        legend.appendChild(toggle);
        entries.forEach(function (entry) {
            var row = document.createElement('div');
            var swatch = document.createElement('span');
            swatch.style.cssText = 'display:inline-block;width:10px;height:10px;margin-right:4px;background:' + entry[0];
            row.appendChild(swatch);
            row.appendChild(document.createTextNode(entry[1] + ' (' + entry[2] + ')'));
            legend.appendChild(row);
        });
        document.body.appendChild(legend);
    };
    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', addLegend);
    } else {
        addLegend();
    }

    // Once Netron has drawn the graph, select the focused node and scroll to it (internal API: best effort;
    // the outline from workbench.css does not depend on it).
    var meta = document.querySelector('meta[name="workbench-focus"]');
    var focus = meta ? meta.getAttribute('content') : '';
    if (!focus) {
        return;
    }
    var id = 'node-name-' + focus;
    var select = function () {
        var target = window.__view__ && window.__view__.target;
        if (!target || !target._table) {
            return false;
        }
        for (var entry of target._table.entries()) {
            if (entry[1] && entry[1].id === id) {
                target.scrollTo(target.select([entry[0]]));
                return true;
            }
        }
        return false;
    };
    // The node's element exists before Netron finishes the layout and sets its target: keep trying a while.
    var tries = 0;
    var timer = window.setInterval(function () {
        tries += 1;
        var selected = false;
        if (document.getElementById(id)) {
            try {
                selected = select();
            } catch (error) {
                console.log('workbench: could not select ' + focus + ': ' + error);
            }
        }
        if (selected || tries > 300) {
            window.clearInterval(timer);
            var drawn = document.getElementById(id) !== null;
            document.body.setAttribute('data-workbench-focus', selected ? 'selected' : drawn ? 'outlined' : 'missing');
        }
    }, 100);
}());
"""
