// A QR code drawn on a canvas (qrcode-generator computes the modules; no markup, no inline
// style, nothing the CSP refuses). The text itself is shown next to it by the caller.

import qrcode from "qrcode-generator";
import type { JSX } from "preact";
import { useEffect, useRef } from "preact/hooks";

const SCALE = 6;
const QUIET_ZONE = 4;

export function QrCode(props: { text: string; label: string }): JSX.Element {
  const ref = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const canvas = ref.current;
    if (!canvas) return;
    const qr = qrcode(0, "M");
    qr.addData(props.text);
    qr.make();
    const count = qr.getModuleCount();
    const size = (count + 2 * QUIET_ZONE) * SCALE;
    canvas.width = size;
    canvas.height = size;
    const context = canvas.getContext("2d");
    if (!context) return;
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, size, size);
    context.fillStyle = "#000000";
    for (let row = 0; row < count; row++) {
      for (let column = 0; column < count; column++) {
        if (qr.isDark(row, column)) {
          context.fillRect((column + QUIET_ZONE) * SCALE, (row + QUIET_ZONE) * SCALE, SCALE, SCALE);
        }
      }
    }
  }, [props.text]);
  return <canvas ref={ref} class="qr" role="img" aria-label={props.label} />;
}
