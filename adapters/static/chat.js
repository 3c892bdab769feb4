// The web chat page: the stored conversation, then every event of its stream as it comes
// (replies, pieces of replies being written, status lines, messages other tabs sent).
// Replies arrive with HTML the server rendered from Markdown (raw HTML escaped, links
// checked); everything else is shown as text.
"use strict";

const log = document.getElementById("log"), form = document.getElementById("form");
const input = document.getElementById("text"), picker = document.getElementById("files");
const chips = document.getElementById("chips"), notice = document.getElementById("notice");
const UNREACHABLE = "Switchboard is not reachable. Is `switchboard up` still running?";

// --- what this tab shows --------------------------------------------------------------------
const shownKeys = new Set();      // replies shown, by outbox key: a reply comes once
const shownMessages = new Set();  // the person's messages shown, by stored id
const ownIds = new Set();         // ids this tab chose for the messages it sent
const writing = new Map();        // message id → the bubble of its reply being written
const statuses = new Map();       // status key → its line, updated in place
let until = "0-0";                // stream entries up to here are in the stored history...
let openAtLoad = new Set();       // ...except pieces of the replies still being written then
let lastSeen = "";

function bubble(cls) {
  const el = document.createElement("div");
  el.className = "msg " + cls;
  return el;
}
function place(el, before) {
  log.querySelector(".hint")?.remove();
  log.insertBefore(el, before || null);
  log.scrollTop = log.scrollHeight;
  return el;
}
function fileLinks(el, files) {
  el.querySelector(".files")?.remove();
  if (!files || !files.length) return;
  const list = document.createElement("div");
  list.className = "files";
  for (const f of files) {
    const href = f.url;
    const item = document.createElement(href ? "a" : "span");
    if (href) { item.href = href; item.download = f.name; item.textContent = "Download " + f.name; }
    else item.textContent = "Attached: " + f.name;
    list.append(item);
  }
  el.append(list);
}
// A reply's buttons: a click sends the button's command, as if typed (the command decides
// whether this person may). Used once: the row goes when one is clicked.
function buttonRow(el, buttons) {
  el.querySelector(".buttons")?.remove();
  if (!buttons || !buttons.length) return;
  const row = document.createElement("div");
  row.className = "buttons";
  for (const b of buttons) {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = b.label; button.title = b.command;
    button.addEventListener("click", () => { row.remove(); send(b.command, []); });
    row.append(button);
  }
  el.append(row);
}
function mine(text, files) {
  const el = bubble("me");
  el.textContent = text;
  fileLinks(el, files);
  return el;
}
function fill(el, reply) {
  el.classList.remove("pending", "writing", "error");
  if (reply.html != null) { el.classList.add("html"); el.innerHTML = reply.html; }  // safe: rendered by the server
  else el.textContent = reply.text;
  fileLinks(el, reply.files);
  buttonRow(el, reply.buttons);
  log.scrollTop = log.scrollHeight;
}
function answerTo(messageId) {
  return messageId == null ? null : log.querySelector(`[data-reply-to="${messageId}"]`);
}

// --- the stored conversation ------------------------------------------------------------------
function showHistory(lines) {
  const past = document.createDocumentFragment();
  for (const line of lines) {
    let el;
    if (line.mine) {
      shownMessages.add(line.id);
      el = mine(line.text, line.files);
      el.dataset.id = line.id;
    } else {
      if (line.key) shownKeys.add(line.key);
      el = bubble("bot");
      if (line.in_reply_to != null) el.dataset.replyTo = line.in_reply_to;
      fill(el, line);
    }
    past.append(el);
  }
  if (lines.length) log.querySelector(".hint")?.remove();
  log.prepend(past);  // before whatever the person sent while it loaded
  log.scrollTop = log.scrollHeight;
}

// --- events -----------------------------------------------------------------------------------
const handlers = {
  message(data) {
    if (ownIds.has(data.client_id)) {  // ours: now stored, its files downloadable
      const el = log.querySelector(`[data-client-id="${CSS.escape(data.client_id)}"]`);
      if (el) { el.dataset.id = data.id; fileLinks(el, data.files); }
      shownMessages.add(data.id);
      return;
    }
    if (shownMessages.has(data.id)) return;
    shownMessages.add(data.id);
    const el = mine(data.text, data.files);
    el.dataset.id = data.id;
    place(el, answerTo(data.id));  // before its answer, should that have come first
  },
  delta(data) {
    let el = writing.get(data.in_reply_to);
    if (!el) {
      el = place(bubble("bot"));
      el.dataset.replyTo = data.in_reply_to;
      writing.set(data.in_reply_to, el);
    }
    if (!el.classList.contains("writing")) { el.classList.remove("pending"); el.classList.add("writing"); el.textContent = ""; }
    el.textContent += data.text;
    log.scrollTop = log.scrollHeight;
  },
  reply(data) {
    const el = writing.get(data.in_reply_to);
    writing.delete(data.in_reply_to);
    if (data.key && shownKeys.has(data.key)) { el?.remove(); return; }
    if (data.key) shownKeys.add(data.key);
    const target = el || place(bubble("bot"));
    if (data.in_reply_to != null) target.dataset.replyTo = data.in_reply_to;
    fill(target, data);  // its files come as links, as in the transcript
  },
  status(data) {
    const el = statuses.get(data.key) || place(bubble("status"));
    statuses.set(data.key, el);
    el.textContent = data.text;
  },
};
function order(id) {
  const [ms, seq] = id.split("-");
  return [BigInt(ms), BigInt(seq)];
}
function inHistory(id) {
  const [a, b] = [order(id), order(until)];
  return a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);
}
function handle(kind, id, data) {
  lastSeen = id;
  const resumed = (kind === "delta" || kind === "reply") && openAtLoad.has(data.in_reply_to);
  if (inHistory(id) && !resumed) return;
  handlers[kind](data);
}
function listen(after) {
  const events = new EventSource("/api/events" + (after ? "?after=" + encodeURIComponent(after) : ""));
  for (const kind of Object.keys(handlers)) {
    events.addEventListener(kind, (e) => handle(kind, e.lastEventId, JSON.parse(e.data)));
  }
  events.addEventListener("open", () => say(""));
  events.addEventListener("error", () => {
    if (events.readyState !== EventSource.CLOSED) return;  // the browser reconnects by itself
    say(UNREACHABLE);
    setTimeout(() => listen(lastSeen || after), 3000);  // it gave up (an error status): we do not
  });
}
function say(text) {
  notice.textContent = text;
  notice.hidden = !text;
}
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function start() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 15000)) {
    try {
      const r = await fetch("/api/history");
      const body = await r.json();
      if (r.ok) {
        say("");
        showHistory(body.lines);
        const resume = body.resume || {after: "", until: "0-0", writing: []};
        until = resume.until;
        openAtLoad = new Set(resume.writing);
        listen(resume.after);
        return;
      }
      say(body.error);
    } catch (err) {
      say(UNREACHABLE);
    }
    await sleep(wait);
  }
}

// --- sending ----------------------------------------------------------------------------------
function newId() {  // crypto.randomUUID needs a secure context; a proxy over plain http is not one
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
function request(text, files, id) {
  if (!files.length) {
    return {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({text, id})};
  }
  const body = new FormData();
  body.append("text", text);
  body.append("id", id);
  for (const f of files) body.append("file", f, f.name);
  return {method: "POST", body};
}
async function post(text, files, id) {
  try {
    const r = await fetch("/api/messages", request(text, files, id));
    try {
      return {ok: r.ok, ...(await r.json())};
    } catch (err) {  // not Switchboard's answer: a proxy in between, say
      return {ok: false, error: `Switchboard answered ${r.status}.`, retry: r.status >= 502};
    }
  } catch (err) {
    return {ok: false, error: UNREACHABLE, retry: true};
  }
}
function claim(messageId, placeholder) {
  shownMessages.add(messageId);
  const answer = writing.get(messageId) || answerTo(messageId);
  if (answer) { placeholder.remove(); return; }  // it came before our own answer did
  placeholder.dataset.replyTo = messageId;
  writing.set(messageId, placeholder);
}
// Sent again with the same id until it is stored: the server keeps one copy per id.
async function send(text, files) {
  const id = newId();
  ownIds.add(id);
  const el = place(mine(text, files.map((f) => ({name: f.name}))));
  el.dataset.clientId = id;
  const placeholder = place(bubble("bot pending"));
  placeholder.textContent = "…";
  for (let wait = 1000; ; wait = Math.min(wait * 2, 15000)) {
    const answer = await post(text, files, id);
    if (answer.ok) { claim(answer.message_id, placeholder); return; }
    if (!answer.retry) { placeholder.classList.replace("pending", "error"); placeholder.textContent = answer.error; return; }
    placeholder.textContent = `${answer.error} Sending again in ${wait / 1000} s…`;
    await sleep(wait);
  }
}

// --- the form ---------------------------------------------------------------------------------
let chosen = [];
function showChosen() {
  chips.replaceChildren(...chosen.map((file, i) => {
    const chip = document.createElement("span"), name = document.createElement("span"), remove = document.createElement("button");
    chip.className = "chip"; name.textContent = file.name; chip.title = file.name;
    remove.type = "button"; remove.textContent = "×"; remove.setAttribute("aria-label", "Remove " + file.name);
    remove.addEventListener("click", () => { chosen.splice(i, 1); showChosen(); input.focus(); });
    chip.append(name, remove);
    return chip;
  }));
}
picker.addEventListener("change", () => {
  chosen.push(...picker.files); picker.value = "";  // the same file can be chosen again
  showChosen(); input.focus();
});
form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value;
  if (!text.trim() && !chosen.length) return;
  const files = chosen;
  chosen = []; showChosen(); input.value = "";
  send(text, files);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
});

if (matchMedia("(max-width: 480px)").matches) input.placeholder = "Message";  // the long hint wraps on a phone

start();
