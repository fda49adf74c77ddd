/* Building the page's elements. Everything shown comes from crawled sites,
 * spiders, users or other nodes: it is put in the page as text
 * (textContent, attributes), never parsed as HTML. */

import { fmtTime, knownStatus } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

/* An element with attributes and children; strings become text nodes. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

export function link(href, text, attrs) {
  return el("a", { href, ...attrs }, text);
}

export function pageLink(url) {
  // Only web addresses become links: a javascript: or data: URL stays text.
  if (typeof url === "string" && /^https?:\/\//i.test(url)) {
    return link(url, url, { class: "url", target: "_blank", rel: "noopener noreferrer" });
  }
  return el("span", { class: "url", text: url || "" });
}

export function timeEl(iso) {
  if (!iso) return "—";
  return el("time", { datetime: iso, title: iso, text: fmtTime(iso) });
}

export function badge(status) {
  return el("span", { class: `badge badge-${knownStatus(status)}`, text: status || "unknown" });
}

/* A table cell, labelled for the narrow layout where rows become cards. */
export function cell(label, content, className) {
  return el("td", { class: className, dataset: { label } }, content);
}
