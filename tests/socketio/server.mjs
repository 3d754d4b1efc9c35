// Runs the real signalbox binary with `[compat] socketio = true` on an ephemeral loopback port
// (TURN on an ephemeral loopback UDP port too) and stops it again.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export async function startServer(extraToml = '') {
  const bin = resolve(REPO, process.env.SIGNALBOX_BIN || 'target/debug/signalbox');
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-sio-'));
  const config = `
[server]
public_host = "127.0.0.1"
drain_grace = "1s"
pid_file = ""
[http]
listen = "127.0.0.1:0"
static_dir = ${JSON.stringify(join(REPO, 'public'))}
shutdown_grace = "1s"
[metrics]
# Off: the default port would collide between servers of one run.
listen = ""
[turn]
listen = ["127.0.0.1:0"]
listen_tcp = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
${extraToml.includes('[compat]') ? '' : '[compat]\nsocketio = true'}
${extraToml}
`;
  writeFileSync(join(dir, 'config.toml'), config);
  const child = spawn(bin, ['--config', join(dir, 'config.toml')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const listeners = {};
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  await new Promise((ok, fail) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); fail(new Error(`no open line in 20 s\n${stderr}`)); }, 20000);
    child.once('exit', (code) => { clearTimeout(timer); fail(new Error(`signalbox exited with ${code}\n${stderr}`)); });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^signalbox: (\S+) listening on (\S+)$/.exec(line);
      if (m) listeners[m[1]] = m[2];
      if (line.startsWith('signalbox: open ')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        ok();
      }
    });
  });
  const signal = (name) => child.kill(name);
  return { url: `https://${listeners.https}`, stop, signal, stderr: () => stderr };
}
