// The client module's example (docs/sdk.md): a space's people, each with a Call button; an
// incoming call is answered at once. Open /sdk/example.html?space=NAME&name=YOU.
import { Space } from '/sdk/signalbox.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const space = new Space({ space: params.get('space') || 'example', name: params.get('name') || 'Example' });
const camera = () => navigator.mediaDevices.getUserMedia({ audio: true, video: true });

function render() {
  $('people').replaceChildren(...[...space.people.values()].map((person) => {
    const button = document.createElement('button');
    button.textContent = `Call ${person.name}${person.busy ? ' (busy)' : ''}`;
    button.onclick = async () => space.call(person.id, { localStream: await camera() });
    const item = document.createElement('li');
    item.append(button);
    return item;
  }));
}
for (const type of ['people', 'person-joined', 'person-left', 'person-busy']) space.addEventListener(type, render);
for (const type of ['ringing', 'call-declined', 'call-busy', 'call-missed', 'call-ended']) {
  space.addEventListener(type, (e) => ($('status').textContent = `${type} ${e.detail.name || ''}`));
}
space.addEventListener('ring', async () => space.accept({ localStream: await camera() }));
space.addEventListener('call-accepted', ({ detail }) => {
  $('status').textContent = `in a call with ${detail.name}`;
  detail.room.addEventListener('track', (e) => ($('remote').srcObject = e.detail.stream));
});
$('hangup').onclick = () => space.hangUp();
space.connect();
