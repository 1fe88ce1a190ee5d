"""What a run is measured with: the kernel's accounting of a process (CPU, RSS), a loopback
capture and what it shows (the first FLV packet, audio delay by tone onsets), and the callee's
control port that makes the onsets."""
