"""The renderer boundary: plain job/result types, the camera math, and the `Renderer` implementations.

Nothing here imports bpy. `BlenderProcessRenderer` runs `python -m blender.server` (the only place bpy lives)
and talks to it over a socket; `InProcessRenderer` imports the scene code in this process (benchmarks).

Two output conventions (ClipSpec.convention; the README gives both with their formulas).

"surreal" (the default): every value means what the original SURREAL's means (its generator's camera and
placement code, checked on its sample clip; ../shared/surreal-reference/README.md), because tools written for
SURREAL depend on it:
- World: metres; the body's up is -Y. It is the MoCap's Z-up frame (SMPL motion as MoSh and AMASS store it;
  the built-in Y-up motions are turned into it by R_x(+90 deg)), yawed by `zrot` about the vertical through
  the frame-0 pelvis, then turned by R_x(+90 deg). So SMPL with global_orient = R_x(90) R_z(zrot) R(pose[:3])
  and the pelvis at joints3D[:, 0] gives the body (SURREAL's `rotateBody`).
- Camera: `camDist - 1` metres from the frame-0 pelvis along +X, at pelvis height, looking along -X, static.
  World -> camera is SURREAL's R = [[0, 0, -1], [0, 1, 0], [-1, 0, 0]], a reflection (det -1), t = -R camLoc:
  the frames are mirror images of the scene, and joints2D = round((K (R X + t))[:2] / z) match them.
  Blender renders with the proper camera diag(-1, 1, 1) R and every pass is flipped left-right after.
- Pixels: no half-pixel shift (as the original's Blender camera): pixel column c spans [c, c + 1) in K's
  coordinates, so its centre is at c + 0.5.
- depth: distance from the camera centre along the pixel's ray (what Blender 2.7x's Z pass held); background
  1e10.
- normal: unit world-frame normals (Cycles' Normal pass); background 0.
- gtflow: Blender's raw Speed pass (X, Y) = motion towards the previous frame in Blender's pixel axes (y
  up): [..., 0] = x_prev - x_cur, [..., 1] = y_cur - y_prev in image pixels; frame 1 holds 0. Readers
  negate [..., 0] to get the flow from frame t-1 to t.
- pose: the MoCap (Z-up) SMPL pose without the yaw; `zrot` the yaw; dtypes as the original's.

"clean": the farm's own unmirrored convention (spec version 1 clips were rendered in it):
- World: the SMPL frame of the motion, metres, +Y up. The body's yaw `zrot` is a rotation about the vertical
  (+Y) axis through the pelvis at frame 0, so the pelvis at frame 0 stays where the motion put it.
- Camera: at pelvis height, `distance` metres from the frame-0 pelvis along world +Z, looking along -Z (so
  with zrot = 0 it faces the SMPL body's front), static over the clip. Its frame is OpenCV's: x right, y down,
  z forward. `x_cam = R @ X_world + t` with R = diag(1, -1, -1) and t = -R @ camLoc.
- Pixels: 0-based, (0, 0) is the centre of the top-left pixel, x right, y down.
  `joints2D = (K @ x_cam)[:2] / z` with K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]], f = 600 px at 320x240:
  SURREAL's K, and the Blender camera is shifted half a pixel so the image agrees with it exactly.
- depth: metres along the camera's z axis (not along the ray); background exactly 1e10.
- normal: unit surface normals in the camera frame (x right, y down, z forward, so visible surfaces have
  z < 0); background 0.
- gtflow: forward optical flow in pixels, [..., 0] = dx (right positive), [..., 1] = dy (down positive): the
  surface point seen at pixel p in frame t is at p + flow in frame t+1. The last frame of a clip has no
  successor and holds 0. From Blender's raw Vector pass (X, Y, Z, W) = (prev - cur, cur - next) with y up:
  dx = -Z, dy = +W.

Both:
- segm: 0 background, 1..24 SMPL parts (joint index + 1), the anatomical part (not swapped by the mirror).
- uv, canon (only with ClipSpec.correspondence): the texture UV (Blender's, v up) and the point on the
  person's canonical body (mean shape, zero pose and translation, the model's frame, metres) of the surface
  seen at each pixel's centre (AOVs interpolated there); NaN on background; flipped like every pass.
- RGB: albedo (sRGB texture, linearised) x SH irradiance, emitted; sRGB-encoded; composited over the
  background image (never mirrored) with the render's alpha. With ClipSpec.shutter > 0 (motion blur), the
  mean in linear light of MOTION_BLUR_SAMPLES such composites at times spread over the open shutter, centred
  on the frame (blender/motion_blur.py); every other pass stays the frame's own (the shutter's centre).
- SH irradiance: Ramamoorthi-Hanrahan with the clip's 9 coefficients in the order L00, L1-1, L10, L11,
  L2-2, L2-1, L20, L21, L22, evaluated on the normal in the frame of the camera Blender renders with (the
  proper twin in the surreal convention): x right, y down, z towards the camera (Cycles' camera space, whose z
  looks forward, with y and z negated; tests/blender/test_correspondence.py measures it on the RGB). So the
  "vertical" term L1-1 multiplies y (down): a negative coefficient lights the body from above, as in SURREAL.
  A moving camera carries this light rig with it.
"""
