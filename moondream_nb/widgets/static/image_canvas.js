// image_canvas.js: the ImageCanvas widget (core.js + canvas.js precede it).
export default { render: ({ model, el }) => renderCanvas(model, el) };
