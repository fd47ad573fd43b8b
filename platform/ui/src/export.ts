// Download buttons for a chart: SVG as drawn, PNG rendered at twice its
// size (through a data: URL, which the page's CSP allows for images).
import { h } from './dom';

function download(name: string, href: string) {
  const a = h('a', { href, download: name }) as HTMLAnchorElement;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function svgText(svg: SVGElement): string {
  const c = svg.cloneNode(true) as SVGElement;
  c.setAttribute('xmlns', 'http://www.w3.org/2000/svg');
  // Inline the styles the page's stylesheet gives the chart's parts.
  const src = svg.querySelectorAll('*'), dst = c.querySelectorAll('*');
  src.forEach((el, i) => {
    const cs = getComputedStyle(el);
    const d = dst[i] as SVGElement;
    for (const p of ['fill', 'stroke', 'stroke-width', 'font-size', 'font-family', 'fill-opacity']) d.style.setProperty(p, cs.getPropertyValue(p));
  });
  return new XMLSerializer().serializeToString(c);
}

export function exportable(svg: SVGElement, name: string): HTMLElement {
  return h('span', { class: 'export' },
    h('button', { type: 'button', onclick: () => download(`${name}.svg`, 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svgText(svg))) }, 'SVG'),
    h('button', { type: 'button', onclick: () => {
      const vb = svg.getAttribute('viewBox')?.split(' ').map(Number) ?? [0, 0, 640, 300];
      const img = new Image();
      img.onload = () => {
        const cv = document.createElement('canvas');
        cv.width = vb[2] * 2; cv.height = vb[3] * 2;
        const ctx = cv.getContext('2d') as CanvasRenderingContext2D;
        ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, cv.width, cv.height);
        ctx.drawImage(img, 0, 0, cv.width, cv.height);
        download(`${name}.png`, cv.toDataURL('image/png'));
      };
      img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svgText(svg));
    } }, 'PNG'));
}
