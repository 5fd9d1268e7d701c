// The health score as a half-circle gauge (SVG), coloured by risk class.
import { RISK_COLOURS } from "./dom";

const NS = "http://www.w3.org/2000/svg";

function arc(r: number, from: number, to: number): string {
  // angles in [0, 1] along the half circle, left to right
  const p = (f: number) => [100 - r * Math.cos(Math.PI * f), 100 - r * Math.sin(Math.PI * f)];
  const [x0, y0] = p(from);
  const [x1, y1] = p(to);
  return `M ${x0.toFixed(2)} ${y0.toFixed(2)} A ${r} ${r} 0 0 1 ${x1.toFixed(2)} ${y1.toFixed(2)}`;
}

/** ``score`` null: the cycle was not comparable with its reference; the gauge says so instead
 * of showing a value. */
export function gauge(score: number | null, risk: string): SVGSVGElement {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 200 120");
  svg.setAttribute("class", "gauge");
  svg.setAttribute("role", "img");
  svg.setAttribute(
    "aria-label",
    score === null ? "not comparable: no health score, risk unknown" : `health score ${score.toFixed(0)} of 100, ${risk} risk`,
  );
  const path = (d: string, colour: string, width: number) => {
    const el = document.createElementNS(NS, "path");
    el.setAttribute("d", d);
    el.setAttribute("fill", "none");
    el.setAttribute("stroke", colour);
    el.setAttribute("stroke-width", String(width));
    el.setAttribute("stroke-linecap", "round");
    svg.append(el);
  };
  const text = (y: number, size: number, content: string, testid: string) => {
    const el = document.createElementNS(NS, "text");
    el.setAttribute("x", "100");
    el.setAttribute("y", String(y));
    el.setAttribute("text-anchor", "middle");
    el.setAttribute("font-size", String(size));
    el.setAttribute("data-testid", testid);
    el.textContent = content;
    svg.append(el);
  };
  path(arc(80, 0, 1), "#d0d7de", 16);
  if (score === null) {
    text(92, 22, "not comparable", "health-score");
    text(114, 13, "risk unknown", "risk-class");
    return svg;
  }
  const f = Math.min(1, Math.max(0, score / 100));
  if (f > 0.002) path(arc(80, 0, f), RISK_COLOURS[risk] ?? "#57606a", 16);
  text(92, 34, score.toFixed(0), "health-score");
  text(114, 13, `${risk} risk`, "risk-class");
  return svg;
}
