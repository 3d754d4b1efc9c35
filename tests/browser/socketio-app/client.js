// The client side of a classic Socket.IO room-call tutorial, unchanged but for the one
// `iceServers` listener docs/socketio.md describes.
const localVideo = document.getElementById('local-video');
const remoteVideo = document.getElementById('remote-video');
const status = document.getElementById('status');
const roomId = new URLSearchParams(location.search).get('room');

const socket = io();
let localStream;
let rtcPeerConnection;
let isRoomCreator = false;
let iceServers = [];
socket.on('iceServers', (list) => { iceServers = list; });

async function setLocalStream() {
  localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  localVideo.srcObject = localStream;
}

function newPeerConnection() {
  const pc = new RTCPeerConnection({ iceServers });
  localStream.getTracks().forEach((track) => pc.addTrack(track, localStream));
  pc.ontrack = (event) => { remoteVideo.srcObject = event.streams[0]; };
  pc.onicecandidate = (event) => {
    if (event.candidate) {
      socket.emit('webrtc_ice_candidate', {
        roomId,
        label: event.candidate.sdpMLineIndex,
        candidate: event.candidate.candidate,
      });
    }
  };
  pc.onconnectionstatechange = () => { status.textContent = pc.connectionState; };
  return pc;
}

socket.on('room_created', async () => {
  await setLocalStream();
  isRoomCreator = true;
  status.textContent = 'waiting';
});

socket.on('room_joined', async () => {
  await setLocalStream();
  socket.emit('start_call', roomId);
});

socket.on('full_room', () => { status.textContent = 'full'; });

socket.on('start_call', async () => {
  if (!isRoomCreator) return;
  rtcPeerConnection = newPeerConnection();
  const offer = await rtcPeerConnection.createOffer();
  await rtcPeerConnection.setLocalDescription(offer);
  socket.emit('webrtc_offer', { type: 'webrtc_offer', sdp: offer, roomId });
});

socket.on('webrtc_offer', async (sdp) => {
  if (isRoomCreator) return;
  rtcPeerConnection = newPeerConnection();
  await rtcPeerConnection.setRemoteDescription(new RTCSessionDescription(sdp));
  const answer = await rtcPeerConnection.createAnswer();
  await rtcPeerConnection.setLocalDescription(answer);
  socket.emit('webrtc_answer', { type: 'webrtc_answer', sdp: answer, roomId });
});

socket.on('webrtc_answer', (sdp) => {
  rtcPeerConnection.setRemoteDescription(new RTCSessionDescription(sdp));
});

socket.on('webrtc_ice_candidate', (event) => {
  const candidate = new RTCIceCandidate({ sdpMLineIndex: event.label, candidate: event.candidate });
  rtcPeerConnection.addIceCandidate(candidate);
});

socket.emit('join', roomId);
