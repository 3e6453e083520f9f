// Shared by the browser tests: start the real `sightline standalone` binary on a free
// loopback port with a tenant, mint tokens with its CLI, and launch Debian's Chromium.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const repo = join(root, '..');
// Base64 of 32 random bytes: the one encoding SIGHTLINE_SECRET takes.
const SECRET = 'E96hEeY9RoFagdAPo/48MxUvNRp6u7j1Ap6qj2BjFGE=';
export const CHROME_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
export const IPHONE_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';
const binary = process.env.SIGHTLINE_BIN || join(repo, 'target', 'debug', 'sightline');

/// Starts sightline with `tenantYaml`; resolves to {url, token(site, scope), stop()}.
export async function startSightline(tenantYaml, extraArgs = []) {
  const work = mkdtempSync(join(tmpdir(), 'sightline-browser-'));
  writeFileSync(join(work, 'tenant.yaml'), tenantYaml);
  const env = { ...process.env, SIGHTLINE_SECRET: SECRET, RUST_LOG: 'warn' };
  const child = spawn(binary, ['standalone', '--tenants', join(work, 'tenant.yaml'), '--data', join(work, 'data'), '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', ...extraArgs], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sightline did not start within 60 s')), 60_000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`sightline exited with ${code}`)));
  });
  const tenant = tenantYaml.match(/name: (\S+) }/)[1];
  return {
    url,
    token: (site, scope) =>
      execFileSync(binary, ['token', 'issue', '--tenant', tenant, '--site', site, '--scope', scope, '--ttl', '1h', '--data', join(work, 'data')], {
        env,
        encoding: 'utf8',
      }).trim(),
    stop: () => {
      child.kill('SIGKILL');
      rmSync(work, { recursive: true, force: true });
    },
  };
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
