// Issue 20's interop check: Debian's Chromium publishes its fake camera (three simulcast
// layers) and microphone to preau-sfu-spike; two more pages receive. Then one receiver
// restarts ICE on its connection (the SFU offers new credentials), then the publisher
// restarts ICE on its own (a new offer). Pictures must keep being decoded throughout.
//   node interop.mjs <spike base URL> [--no-restart] [--seconds N (steady time, default 8)]
// Prints a JSON report; exits 1 when a receiver stops decoding.
import { chromium } from 'playwright-core';

const base = process.argv[2] ?? 'http://127.0.0.1:18490';
const restart = !process.argv.includes('--no-restart');
const secondsAt = process.argv.indexOf('--seconds');
const steady = secondsAt > 0 ? Number(process.argv[secondsAt + 1]) * 1000 : 8000;
const wait = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required'],
});
const open = async (role, user, as) => {
  const token = await (await fetch(`${base}/token?user=${user}&role=${as}`)).text();
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/interop?role=${role}&token=${encodeURIComponent(token)}`);
  return page;
};
const probe = (p) => p.evaluate(() => window.probe());
try {
  const pub = await open('pub', 'teacher', 'host');
  await wait(1500);
  const subs = [await open('sub', 'pupil1', 'participant'), await open('sub', 'pupil2', 'participant')];
  await wait(steady);
  const before = await Promise.all(subs.map(probe));
  let afterSub = before;
  if (restart) {
    await subs[0].evaluate(() => window.restart());
    await wait(5000);
    afterSub = await Promise.all(subs.map(probe));
    await pub.evaluate(() => window.restart());
    await wait(6000);
  }
  const after = await Promise.all(subs.map(probe));
  const publisher = await probe(pub);
  const decoding = (a, b) => a.every((s, i) => s.framesDecoded > (b ? b[i].framesDecoded + 30 : 30));
  const ok = decoding(before) && decoding(afterSub, restart ? before : null) && decoding(after, restart ? afterSub : null)
    && after.every((s) => s.audioPackets > 0);
  console.log(JSON.stringify({ ok, restart, publisher, before, afterSubRestart: afterSub, afterPubRestart: after }, null, 1));
  process.exitCode = ok ? 0 : 1;
} finally {
  await browser.close();
}
