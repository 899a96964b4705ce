// relayd web console: live updates of the mailboxes section through
// server-sent events. The page works without this script (reload it).
"use strict";
(function () {
  var section = document.getElementById("mailboxes");
  if (!section || !window.EventSource) {
    return;
  }
  var source = new EventSource("/events");
  source.addEventListener("mailboxes", function (ev) {
    // The server rendered and escaped this HTML for this session.
    section.innerHTML = ev.data;
  });
  source.addEventListener("expired", function () {
    source.close();
    window.location.reload();
  });
})();
