(function(){var secs=[].filter.call(document.querySelectorAll('section'),function(s){return s.querySelector('img[data-src]')});
function near(r,h){return r.bottom>=-800&&r.top<=h+800}
function reveal(){var h=window.innerHeight||800;secs=secs.filter(function(s){
if(s.hidden||!near(s.getBoundingClientRect(),h))return true;
[].forEach.call(s.querySelectorAll('img[data-src]'),function(i){if(i.offsetParent!==null&&near(i.getBoundingClientRect(),h)){
i.src=i.getAttribute('data-src');i.removeAttribute('data-src')}});return !!s.querySelector('img[data-src]')})}
var t=0;function later(){if(!t){t=setTimeout(function(){t=0;reveal()},80)}}
window.addEventListener('scroll',later,{passive:true});window.addEventListener('resize',later);
window.addEventListener('hashchange',later);window.__reveal=later;reveal()})();
window.addEventListener('load',function(){var p=window.__selftestParams(),d=document.documentElement;if(!p)return;
function snap(){var o={};[].forEach.call(d.attributes,function(a){if(a.name.indexOf('data-visible-')===0)
o[a.name.slice(13)]=+a.value});return o}
try{if(p.suite){var out=JSON.parse(p.suite).map(function(s){window.__selftest(s);return snap()});
d.setAttribute('data-selftest-results',JSON.stringify(out));if(!p.keep)window.__selftest({})}
else if(window.__selftest){window.__selftest(p)}}catch(e){console.error('selftest: '+e)}
d.setAttribute('data-load-ms',String(Math.round(performance.now())));
setTimeout(function(){var ok=0,wait=0;[].forEach.call(document.images,function(i){if(!i.getAttribute('src'))return;
if(i.complete&&i.naturalWidth){ok++}else{wait++}});d.setAttribute('data-images-loaded',ok);
d.setAttribute('data-images-pending',wait);d.setAttribute('data-selftest','done')},500)});
