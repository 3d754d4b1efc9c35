// Running a meeting in the web app, by clicking as people would: the host locks the room, sees
// who knocks, admits one guest and declines another, asks someone to mute, removes someone,
// unlocks and ends the meeting for everyone; guests see the lobby, can cancel, and get a clear
// screen for every ending. Also saves the lobby screenshot the README shows.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  REPO, cleanupAll, ensureArtifacts, expectVideoFlowing, joinRoom, launchParticipant, remoteTiles, roomName, startServer,
} from './harness.mjs';

const TEST_TIMEOUT_MS = 120000;

after(cleanupAll);

async function setup(t, people, extraToml = '') {
  const server = await startServer(extraToml);
  t.after(() => server.stop());
  const out = [];
  for (const [label, options] of people) {
    const p = await launchParticipant(label, options);
    t.after(() => p.stop());
    out.push(p);
  }
  return { server, people: out };
}

/** Opens the room page and clicks Join; the page then shows the lobby, not the call. */
async function knock(participant, url, name) {
  const { page } = participant;
  await page.goto(url);
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.getByRole('heading', { name: 'Waiting for the host to let you in' }).waitFor();
}

async function lock(page) {
  await page.getByRole('button', { name: 'Lock room', pressed: false }).click();
  await page.getByRole('button', { name: 'Lock room', pressed: true }).waitFor();
}

function assertNoConsoleErrors(...people) {
  for (const p of people) assert.deepEqual(p.errors, [], `${p.label} logged errors`);
}

test('the host admits one guest and declines another by clicking; the lobby screenshot is saved', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { people: [host, bo, cy], server } = await setup(t, [['host', {}], ['bo', {}], ['cy', {}]]);
  // Its own server, so a plain readable room name is unique here and looks right in the picture.
  const url = `${server.url}/r/weekly-planning`;
  await joinRoom(host, url, 'Hana Ito');
  const hp = host.page;
  await lock(hp);

  await knock(bo, url, 'Bo Lindqvist');
  const bar = hp.getByRole('region', { name: 'Waiting to join' });
  await bar.getByText('Bo Lindqvist is waiting to join').waitFor();
  await bar.getByRole('button', { name: 'Admit Bo Lindqvist' }).click();
  await bo.page.locator('#call').waitFor({ state: 'visible' });
  await Promise.all([expectVideoFlowing(hp), expectVideoFlowing(bo.page)]);
  assert.equal(await bar.isHidden(), true, 'nobody waits any more');

  await knock(cy, url, 'Cy Osei');
  await bar.getByText('Cy Osei is waiting to join').waitFor();
  // The participants panel lists who waits, with the same answers.
  await hp.getByRole('button', { name: /^Participants/ }).click();
  const waitingList = hp.getByRole('list', { name: 'Waiting to join' });
  await waitingList.getByRole('button', { name: 'Decline Cy Osei' }).waitFor();
  await hp.getByRole('list', { name: 'In the call' }).getByRole('button', { name: 'Remove Bo Lindqvist' }).waitFor();
  await remoteTiles(hp).locator('.path-badge', { hasText: '/s' }).waitFor();
  const file = join(ensureArtifacts(), 'lobby.png');
  await hp.screenshot({ path: file });
  if (process.env.SIGNALBOX_UPDATE_SCREENSHOTS === '1') {
    mkdirSync(join(REPO, 'docs'), { recursive: true });
    copyFileSync(file, join(REPO, 'docs/screenshot-lobby.png'));
  }

  // Decline from the keyboard: from the top of the page, Tab reaches the banner's Decline
  // button (bounded walk).
  await hp.locator('.skip').focus();
  let found = false;
  for (let i = 0; i < 15 && !found; i++) {
    await hp.keyboard.press('Tab');
    found = (await hp.evaluate(() => document.activeElement.id)) === 'knock-decline';
  }
  assert.ok(found, 'the Decline button is reachable with Tab');
  await hp.keyboard.press('Enter');
  await cy.page.getByRole('heading', { name: 'The host did not let you in' }).waitFor();
  await cy.page.getByRole('button', { name: 'Ask again' }).waitFor();
  await waitingList.waitFor({ state: 'hidden' });
  assert.equal(await remoteTiles(hp).count(), 1, 'only Bo is in the call');
  assertNoConsoleErrors(host, bo, cy);
});

test('the host asks to mute, removes a participant, locks and unlocks, and ends the meeting for everyone', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const phone = { viewport: { width: 390, height: 844 } };
  const { people: [host, bo, cy, di], server } = await setup(t, [['host', phone], ['bo', {}], ['cy', {}], ['di', phone]]);
  const url = `${server.url}/r/${roomName('meeting')}`;
  await joinRoom(host, url, 'Hana');
  await joinRoom(bo, url, 'Bo');
  await joinRoom(cy, url, 'Cy');
  const hp = host.page;
  await remoteTiles(hp).nth(1).waitFor();

  // Ask to mute: Bo's microphone goes off, and Bo is told who asked.
  await hp.getByRole('button', { name: /^Participants/ }).click();
  const inCall = hp.getByRole('list', { name: 'In the call' });
  await inCall.getByRole('button', { name: 'Ask Bo to mute' }).click();
  await bo.page.getByRole('button', { name: 'Unmute microphone', pressed: true }).waitFor();
  await bo.page.getByText('Hana asked you to mute').waitFor();

  // Guests get no host controls: the server would refuse them anyway.
  assert.equal(await bo.page.getByRole('button', { name: 'Lock room' }).count(), 0);
  assert.equal(await bo.page.getByRole('button', { name: 'End for everyone' }).count(), 0);

  // Remove Cy: Cy's screen says so, the host's grid drops Cy's tile.
  await inCall.getByRole('button', { name: 'Remove Cy' }).click();
  await cy.page.getByRole('heading', { name: 'You were removed from the meeting' }).waitFor();
  assert.equal(await cy.page.getByRole('button', { name: 'Rejoin' }).count(), 0, 'no rejoin button');
  await inCall.getByRole('button', { name: 'Remove Cy' }).waitFor({ state: 'detached' });
  assert.equal(await remoteTiles(hp).count(), 1);

  // Lock; Di knocks, cancels (the host's banner goes away), asks again; unlocking lets Di in.
  await hp.getByRole('button', { name: 'Close panel' }).click();
  await lock(hp);
  await knock(di, url, 'Di');
  const bar = hp.getByRole('region', { name: 'Waiting to join' });
  await bar.getByText('Di is waiting to join').waitFor();
  const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.equal(await overflow(di.page), 0, 'the lobby fits a phone');
  assert.equal(await overflow(hp), 0, 'the host\'s call with a knock fits a phone');
  await di.page.getByRole('button', { name: 'Cancel' }).click();
  await di.page.getByRole('heading', { name: 'You left the lobby' }).waitFor();
  await bar.waitFor({ state: 'hidden' });
  await di.page.getByRole('button', { name: 'Ask again' }).click();
  await di.page.getByRole('button', { name: 'Join', exact: true }).click();
  await di.page.getByRole('heading', { name: 'Waiting for the host to let you in' }).waitFor();
  await bar.getByText('Di is waiting to join').waitFor();
  await hp.getByRole('button', { name: 'Lock room', pressed: true }).click();
  await hp.getByRole('button', { name: 'Lock room', pressed: false }).waitFor();
  await di.page.locator('#call').waitFor({ state: 'visible' });
  await remoteTiles(di.page).nth(1).waitFor();

  // End for everyone, after confirming.
  await hp.getByRole('button', { name: 'End for everyone' }).click();
  await hp.getByRole('dialog', { name: 'End the meeting for everyone?' }).getByRole('button', { name: 'End for everyone' }).click();
  for (const p of [host, bo, di]) {
    await p.page.getByRole('heading', { name: 'The meeting has ended' }).waitFor();
  }
  await hp.getByText('You ended').waitFor();
  assert.equal(await overflow(hp), 0, 'the end screen fits a phone');
  assertNoConsoleErrors(host, bo, cy, di);
});
