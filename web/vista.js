// Vista: colour Vista nodes in the graph so tiled/zoom pipelines are easy to spot.
import { app } from "../../scripts/app.js";

const VISTA_COLOR = "#2d3f5c";
const VISTA_BGCOLOR = "#1e2a3d";

app.registerExtension({
  name: "vista.nodeColors",
  nodeCreated(node) {
    if (node.comfyClass && node.comfyClass.startsWith("Vista")) {
      node.color = node.color ?? VISTA_COLOR;
      node.bgcolor = node.bgcolor ?? VISTA_BGCOLOR;
    }
  },
});
