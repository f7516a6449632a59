// Small conveniences of the dashboard's pages; every page works without them.

// Copy buttons next to a secret shown once: hidden until this script can make them work.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    const target = document.getElementById(button.dataset.copy);
    if (!target) return;
    try {
      await navigator.clipboard.writeText(target.textContent ?? "");
      button.textContent = "Copied";
    } catch {
      // No clipboard access (an older browser, a denied permission): select the text for the person to copy.
      const range = document.createRange();
      range.selectNodeContents(target);
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
  });
}

// Forms that ask before they change something (disabling a user or an agent).
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}

// An invitation link carries its token in the fragment, which browsers never send to a server: move it into the form,
// then out of the address bar and the history.
const token = document.getElementById("token");
const fromLink = /^#token=([A-Za-z0-9_]+)$/.exec(location.hash);
if (token && fromLink) {
  token.value = fromLink[1];
  history.replaceState(null, "", location.pathname);
  const wrapper = document.getElementById("token-field");
  if (wrapper) wrapper.hidden = true;
}
