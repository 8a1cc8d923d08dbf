"""The real-time pipeline behind `vcam run`.

capture (camera, video file or the demo) -> landmarks (track, retarget onto the avatar,
face-loss handling) -> render (landmark image -> personalised generator) -> output (compose
the canvas, send it to the virtual camera, preview window and/or file). Each stage runs in
its own thread (:mod:`vcam.runtime.pipeline`). :mod:`vcam.commands.run` defines the command's
options (standard library only) and :mod:`vcam.runtime.session` assembles a run from them.
"""
