// DOM building helpers. Every piece of data becomes a text node or an attribute
// value; nothing is ever parsed as HTML.

/**
 * Creates an element.
 * props: className, text (textContent), title, dataset {}, attrs {}, on {event: fn},
 *        and any other key is set as a property (value, type, checked, disabled...).
 * children: Nodes, strings (as text), or null/false (skipped), nested arrays.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "className") element.className = value;
    else if (key === "text") element.textContent = String(value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key === "attrs") {
      for (const [name, attr] of Object.entries(value)) {
        if (attr !== undefined && attr !== null && attr !== false) {
          element.setAttribute(name, attr === true ? "" : String(attr));
        }
      }
    } else if (key === "on") {
      for (const [event, handler] of Object.entries(value)) {
        element.addEventListener(event, handler);
      }
    } else element[key] = value;
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces all children of `parent` with `children`. */
export function replaceChildren(parent, ...children) {
  parent.textContent = "";
  append(parent, children);
}

/** A small SVG-free icon: a span whose glyph is decorative (hidden from readers). */
export function glyph(text) {
  return h("span", { className: "glyph", text, attrs: { "aria-hidden": "true" } });
}
