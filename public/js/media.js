// The local camera, microphone and screen. Owns every local track and says what changed, so
// the rest of the app only forwards tracks to peers (`replaceTrack`) and previews.
//
// Camera off stops the camera track (the camera light goes out) instead of sending black
// frames; mute only disables the microphone track so unmuting is instant.
//
// Events: `change` ({kind, track}) whenever the outgoing track of a kind is replaced.

const STORAGE = { camera: 'signalbox.camera', mic: 'signalbox.mic' };

const VIDEO_QUALITY = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream();
    this.audioTrack = null;
    this.cameraTrack = null;
    this.screenTrack = null;
    this.micMuted = false;
    this.cameraOn = true;
    /** Why the camera or microphone is unavailable: 'blocked', 'missing', 'busy' or null. */
    this.cameraProblem = null;
    this.micProblem = null;
    this.cameraId = localStorage.getItem(STORAGE.camera) || '';
    this.micId = localStorage.getItem(STORAGE.mic) || '';
  }

  get videoTrack() {
    return this.screenTrack || this.cameraTrack;
  }

  /** Opens the microphone and (unless `audioOnly`) the camera; failures are recorded, not thrown. */
  async start({ audioOnly = false } = {}) {
    this.cameraOn = !audioOnly;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.cameraProblem = this.micProblem = 'unsupported';
      return;
    }
    const wantVideo = !audioOnly && !this.cameraTrack;
    const wantAudio = !this.audioTrack;
    if (wantAudio && wantVideo) {
      try {
        const s = await navigator.mediaDevices.getUserMedia({
          audio: this.audioConstraints(),
          video: this.videoConstraints(),
        });
        this.adopt('audio', s.getAudioTracks()[0] || null);
        this.adopt('video', s.getVideoTracks()[0] || null);
        this.cameraProblem = this.micProblem = null;
        return;
      } catch {
        // One of the two failed; find out which by asking for each alone.
      }
    }
    if (wantAudio) await this.openMic();
    if (wantVideo) await this.openCamera();
    if (audioOnly) this.stopCamera();
  }

  async openMic() {
    try {
      const s = await this.getUserMediaWithFallback('audio');
      this.adopt('audio', s.getAudioTracks()[0] || null);
      this.micProblem = null;
    } catch (err) {
      this.micProblem = problemOf(err);
    }
  }

  async openCamera() {
    try {
      const s = await this.getUserMediaWithFallback('video');
      this.adopt('video', s.getVideoTracks()[0] || null);
      this.cameraProblem = null;
      return true;
    } catch (err) {
      this.cameraProblem = problemOf(err);
      return false;
    }
  }

  /** Asks for one kind; a remembered device that is gone falls back to the default one. */
  async getUserMediaWithFallback(kind) {
    const constraints = kind === 'audio' ? { audio: this.audioConstraints() } : { video: this.videoConstraints() };
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      if (err && (err.name === 'OverconstrainedError' || err.name === 'NotFoundError')) {
        if (kind === 'audio' && this.micId) {
          this.micId = '';
          return navigator.mediaDevices.getUserMedia({ audio: this.audioConstraints() });
        }
        if (kind === 'video' && this.cameraId) {
          this.cameraId = '';
          return navigator.mediaDevices.getUserMedia({ video: this.videoConstraints() });
        }
      }
      throw err;
    }
  }

  audioConstraints() {
    const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (this.micId) c.deviceId = { exact: this.micId };
    return c;
  }

  videoConstraints() {
    const c = { ...VIDEO_QUALITY };
    if (this.cameraId) c.deviceId = { exact: this.cameraId };
    return c;
  }

  /** Makes `track` the current one of its kind and announces it. */
  adopt(kind, track) {
    if (kind === 'audio') {
      if (this.audioTrack && this.audioTrack !== track) {
        this.stream.removeTrack(this.audioTrack);
        this.audioTrack.stop();
      }
      this.audioTrack = track;
      if (track) {
        track.enabled = !this.micMuted;
        this.stream.addTrack(track);
        const id = track.getSettings().deviceId;
        if (id) this.micId = id;
      }
      this.emit('change', { kind: 'audio', track });
      return;
    }
    if (this.cameraTrack && this.cameraTrack !== track) {
      if (!this.screenTrack) this.stream.removeTrack(this.cameraTrack);
      this.cameraTrack.stop();
    }
    this.cameraTrack = track;
    if (track) {
      const id = track.getSettings().deviceId;
      if (id) this.cameraId = id;
      track.onended = () => {
        if (this.cameraTrack === track) this.adopt('video', null);
      };
    }
    if (!this.screenTrack) {
      if (track) this.stream.addTrack(track);
      this.emit('change', { kind: 'video', track });
    }
  }

  async listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], mics: [] };
    const devices = await navigator.mediaDevices.enumerateDevices();
    const label = (d, i, what) => d.label || `${what} ${i + 1}`;
    const cameras = devices
      .filter((d) => d.kind === 'videoinput' && d.deviceId)
      .map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Camera') }));
    const mics = devices
      .filter((d) => d.kind === 'audioinput' && d.deviceId)
      .map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Microphone') }));
    return { cameras, mics };
  }

  async switchCamera(deviceId) {
    this.cameraId = deviceId;
    localStorage.setItem(STORAGE.camera, deviceId);
    if (!this.cameraOn) return true;
    return this.openCamera();
  }

  async switchMic(deviceId) {
    this.micId = deviceId;
    localStorage.setItem(STORAGE.mic, deviceId);
    await this.openMic();
    return !this.micProblem;
  }

  setMicMuted(muted) {
    this.micMuted = muted;
    if (this.audioTrack) this.audioTrack.enabled = !muted;
  }

  async setCameraOn(on) {
    this.cameraOn = on;
    if (!on) {
      this.stopCamera();
      return true;
    }
    if (this.cameraTrack) return true;
    const ok = await this.openCamera();
    if (!ok) this.cameraOn = false;
    return ok;
  }

  stopCamera() {
    if (this.cameraTrack) this.adopt('video', null);
  }

  canShareScreen() {
    return Boolean(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
  }

  /** Starts sharing the screen instead of the camera; false when the person cancelled. */
  async startScreenShare() {
    let s;
    try {
      s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    } catch {
      return false;
    }
    const track = s.getVideoTracks()[0];
    if (!track) return false;
    if ('contentHint' in track) track.contentHint = 'detail';
    if (this.cameraTrack) this.stream.removeTrack(this.cameraTrack);
    this.screenTrack = track;
    this.stream.addTrack(track);
    track.onended = () => this.stopScreenShare();
    this.emit('change', { kind: 'video', track });
    return true;
  }

  stopScreenShare() {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    this.stream.removeTrack(track);
    track.onended = null;
    track.stop();
    if (this.cameraTrack) this.stream.addTrack(this.cameraTrack);
    this.emit('change', { kind: 'video', track: this.cameraTrack });
  }

  stopAll() {
    for (const t of [this.audioTrack, this.cameraTrack, this.screenTrack]) if (t) t.stop();
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
    this.audioTrack = this.cameraTrack = this.screenTrack = null;
  }

  rememberChoices() {
    if (this.cameraId) localStorage.setItem(STORAGE.camera, this.cameraId);
    if (this.micId) localStorage.setItem(STORAGE.mic, this.micId);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function problemOf(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') return 'blocked';
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'missing';
  if (name === 'NotReadableError' || name === 'AbortError') return 'busy';
  return 'blocked';
}
