// Review queue: click a transcript cue to play the medium from that moment (issue 17). No framework.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".pf-seek");
  if (!button) return;
  const list = button.closest(".pf-transcript");
  const player = list && document.getElementById(list.dataset.player);
  if (!player) return;
  player.currentTime = parseFloat(button.dataset.start) || 0;
  const playing = player.play && player.play();
  if (playing && playing.catch) playing.catch(() => {}); // autoplay refused: the seek still happened
});
