// relayd web console: live updates of the mailboxes section through
// server-sent events. The page works without this script (reload it).
// Only what changed is replaced: the banner's text, the warnings, and the
// rows that differ, so that keyboard focus and a screen reader's place
// stay where they are.
"use strict";
(function () {
  var section = document.getElementById("mailboxes");
  if (!section || !window.EventSource) {
    return;
  }

  // focusKey names the focused control of a row so that its copy in the
  // new row can take the focus back.
  function focusKey(el) {
    var form = el.closest("form");
    return {
      tag: el.tagName,
      action: form ? form.getAttribute("action") : null,
      href: el.getAttribute("href")
    };
  }

  function findByKey(root, key) {
    var list = root.querySelectorAll(key.tag.toLowerCase());
    for (var i = 0; i < list.length; i++) {
      var el = list[i];
      var form = el.closest("form");
      if ((form ? form.getAttribute("action") : null) === key.action && el.getAttribute("href") === key.href) {
        return el;
      }
    }
    return null;
  }

  function replaceKeepingFocus(oldEl, newEl) {
    var active = document.activeElement;
    var key = active && oldEl.contains(active) ? focusKey(active) : null;
    oldEl.replaceWith(newEl);
    if (key) {
      var again = findByKey(newEl, key);
      if (again) {
        again.focus();
      }
    }
  }

  function update(html) {
    var tpl = document.createElement("template");
    // The server rendered and escaped this HTML for this session.
    tpl.innerHTML = html;
    var fresh = tpl.content;
    var oldRows = section.querySelectorAll("tbody > tr");
    var newRows = fresh.querySelectorAll("tbody > tr");
    var same = oldRows.length === newRows.length;
    for (var i = 0; same && i < oldRows.length; i++) {
      same = oldRows[i].id === newRows[i].id;
    }
    if (!same) {
      // Mailboxes came or went (a reload of the configuration).
      var oldBody = section.querySelector("tbody");
      var newBody = fresh.querySelector("tbody");
      if (oldBody && newBody) {
        replaceKeepingFocus(oldBody, newBody);
      }
    } else {
      for (var j = 0; j < oldRows.length; j++) {
        if (oldRows[j].outerHTML !== newRows[j].outerHTML) {
          replaceKeepingFocus(oldRows[j], newRows[j]);
        }
      }
    }
    var banner = section.querySelector(".banner");
    var newBanner = fresh.querySelector(".banner");
    if (banner && newBanner && banner.textContent !== newBanner.textContent) {
      banner.textContent = newBanner.textContent;
    }
    var warnings = section.querySelector("#warnings");
    var newWarnings = fresh.querySelector("#warnings");
    if (warnings && newWarnings && warnings.innerHTML !== newWarnings.innerHTML) {
      warnings.replaceWith(newWarnings);
    }
  }

  var source = new EventSource("/events");
  source.addEventListener("mailboxes", function (ev) {
    update(ev.data);
  });
  source.addEventListener("expired", function () {
    source.close();
    window.location.reload();
  });
  // The browser retries a broken stream by itself; one it gave up on (the
  // session ended, relayd restarted, too many streams) is said on the
  // page, which would otherwise look live and be stale.
  source.onerror = function () {
    if (source.readyState !== EventSource.CLOSED || document.getElementById("live-stopped")) {
      return;
    }
    var p = document.createElement("p");
    p.id = "live-stopped";
    p.className = "warning";
    p.setAttribute("role", "alert");
    p.appendChild(document.createTextNode("Live updates stopped: the session may have ended or relayd restarted. "));
    var a = document.createElement("a");
    a.href = "/";
    a.textContent = "Reload the page";
    p.appendChild(a);
    section.insertBefore(p, section.firstChild);
  };
})();
